"""One benchmark per machine: the machine lock, its refusal message, --allow-concurrent and a dead holder's lock."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from aebench import machinelock
from aebench.cli import main
from aebench.config import Matrix
from aebench.results import CellResult
from aebench.store import Store, open_store
from support import tiny_matrix_dict, write_matrix

# A second process that takes the lock, names its run, says so and waits for its stdin to close (or to be killed).
HOLDER = ("import sys; from pathlib import Path; from aebench import machinelock\n"
          "with machinelock.hold('run', directory=Path(sys.argv[1])) as lock:\n"
          "    lock.name_run('20261127T120000-abcdef'); print('held', flush=True); sys.stdin.read()\n")


@pytest.fixture
def other_holder(own_cache_dir: Path):
    """Another aebench process holding this machine; stopped by the test's end whatever happens."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(own_cache_dir)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "held"
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def test_a_second_benchmark_is_refused_with_the_holder_named(other_holder: subprocess.Popen,
                                                             own_cache_dir: Path) -> None:
    started = json.loads((own_cache_dir / machinelock.LOCK_FILE).read_text())["started_at"]
    with pytest.raises(machinelock.MachineBusy) as refused:
        with machinelock.hold("run"):
            pass
    assert str(refused.value) == (f"another aebench run (pid {other_holder.pid}, run 20261127T120000-abcdef, started "
                                  f"{started}) holds this machine: speed figures would be contaminated; wait for it "
                                  "or pass --allow-concurrent")
    assert refused.value.exit_status == 2


def test_allow_concurrent_runs_and_marks_every_cell(other_holder: subprocess.Popen) -> None:
    notes: list[str] = []
    with machinelock.hold("run", allow_concurrent=True, note=notes.append) as lock:
        assert not lock.exclusive and lock.other is not None and lock.other.pid == other_holder.pid
        cell = Matrix.from_dict(tiny_matrix_dict(variants=["conv"])).cells()[0]
        marked = lock.mark(CellResult(cell=cell, status="ok", duration_s=1.0, metrics={"speed.train_ips": 100.0}))
    assert marked.metrics["speed.contaminated"] == 1.0 and marked.metrics["speed.train_ips"] == 100.0
    assert f"pid {other_holder.pid}" in str(marked.info["contaminated"]) and "--allow-concurrent" in notes[0]


def test_a_run_let_in_beside_a_holder_keeps_the_machine_busy_after_that_holder_leaves(
        other_holder: subprocess.Popen) -> None:
    with machinelock.hold("run", allow_concurrent=True, note=lambda text: None) as beside:
        assert not beside.exclusive
        other_holder.stdin.close()  # the first holder finishes; the concurrent run goes on
        other_holder.wait(timeout=30)
        with pytest.raises(machinelock.MachineBusy, match="another aebench run started with --allow-concurrent holds"):
            with machinelock.hold("run"):
                pass
        with machinelock.hold("run", allow_concurrent=True, note=lambda text: None) as third:
            assert not third.exclusive and "started with --allow-concurrent" in str(third.contamination)
    with machinelock.hold("run") as alone:  # every concurrent run has gone
        assert alone.exclusive


def test_the_lock_is_released_and_cleared_on_exit(own_cache_dir: Path) -> None:
    with machinelock.hold("run") as lock:
        assert lock.exclusive
        lock.name_run("20261127T000000-aaaaaa")
        held = json.loads((own_cache_dir / machinelock.LOCK_FILE).read_text())
        assert held["run_id"] == "20261127T000000-aaaaaa" and held["command"] == "run"
    assert (own_cache_dir / machinelock.LOCK_FILE).read_text() == ""
    with machinelock.hold("ab") as again:  # free again
        assert again.exclusive


def test_a_dead_holders_lock_is_taken_over_and_said_so(other_holder: subprocess.Popen) -> None:
    other_holder.send_signal(signal.SIGKILL)  # as the OOM killer would: no cleanup runs
    other_holder.wait(timeout=30)
    notes: list[str] = []
    with machinelock.hold("run", note=notes.append) as lock:
        assert lock.exclusive
    assert len(notes) == 1 and notes[0].startswith("took over the machine lock of another aebench run (pid "
                                                   f"{other_holder.pid}, run 20261127T120000-abcdef")


def test_aebench_run_refused_writes_nothing(other_holder: subprocess.Popen, tmp_path: Path, tiny_dataset_dir: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    store = tmp_path / "s.sqlite"
    status = main(["run", str(write_matrix(tmp_path / "m.toml")), "--data-dir", str(tiny_dataset_dir),
                   "--store", str(store), "--reports-dir", str(tmp_path / "reports")])
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert f"another aebench run (pid {other_holder.pid}" in err and "--allow-concurrent" in err
    assert not store.exists() and not (tmp_path / "reports").exists()


def _add_run(store: Store, run_id: str, commit: str, speed: float, contaminated: bool) -> None:
    matrix = Matrix.from_dict(tiny_matrix_dict(variants=["conv"]))
    store.begin_run(matrix, {"git_commit": commit, "machine_id": "m1"}, [], run_id=run_id)
    for cell in matrix.cells():
        metrics = {"quality.psnr_db": 20.0, "speed.train_ips": speed}
        if contaminated:
            metrics["speed.contaminated"] = 1.0
        store.add_result(run_id, CellResult(cell=cell, status="ok", duration_s=1.0, metrics=metrics))
    store.finish_run(run_id, "complete", 1.0, {})


@pytest.mark.parametrize("contaminated, status", [(False, 1), (True, 0)])
def test_compare_leaves_contaminated_speed_figures_out(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                       contaminated: bool, status: int) -> None:
    with open_store(tmp_path / "s.sqlite") as store:
        for day, speed in enumerate([1000.0, 1010.0, 990.0]):
            _add_run(store, f"2026010{day + 1}T000000-aaaaa{day}", "a" * 40, speed, False)
        for day, speed in enumerate([700.0, 705.0, 695.0]):  # 30% slower, but taken beside another benchmark
            _add_run(store, f"2026011{day + 1}T000000-bbbbb{day}", "b" * 40, speed, contaminated)
    assert main(["compare", "commit:aaaa", "commit:bbbb", "--store", str(tmp_path / "s.sqlite")]) == status
    out = capsys.readouterr().out
    assert ("-30" in out) is not contaminated  # the contaminated figures are not shown as a change either
