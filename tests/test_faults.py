"""The fault-injection suite: every fault a benchmark run meets in the wild, injected on purpose, and checked for
three things: no finished cell lost, the failing cell recorded with its exit code and stderr tail, and a one-line
error where the input was bad. The session ends with one line: faults injected N, bad inputs tried M, cells lost 0.

The failing variants come from tests/plugins/fault_plugin.py, registered as a user's plugin would be
(AEBENCH_PLUGINS): the product has no hook for them.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from typing import TYPE_CHECKING

import psutil
import pytest

from aebench.cli import main
from aebench.results import CellResult
from aebench.store import Store, open_store
from support import write_matrix

if TYPE_CHECKING:
    from conftest import FaultLog

PLUGINS = Path(__file__).parent / "plugins"
QUICK = {"accuracy": False, "predict_path": False}  # the faults are the subject, not the figures

pytestmark = pytest.mark.faults


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(PLUGINS), "AEBENCH_PLUGINS": "fault_plugin", **extra}


def _aebench(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aebench.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=600)


def _processes_with(variable: str, value: str) -> list[psutil.Process]:
    """Live processes whose environment carries this variable: everything a run started (workers inherit it)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.status() != psutil.STATUS_ZOMBIE and process.environ().get(variable) == value:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


# -- faults inside cells: each stored with its exit code and stderr, and the sweep goes on ---------------------------


@pytest.mark.slow
def test_cells_that_crash_are_killed_or_run_out_of_memory_are_stored_and_the_sweep_goes_on(
        tmp_path: Path, tiny_dataset_dir: Path, fault_log: FaultLog) -> None:
    # From another working directory, with relative paths: the workers start elsewhere and must still find them.
    # The address-space limit leaves a real cell gigabytes (malloc arenas reserve 64 MiB each) and refuses 16 GiB.
    write_matrix(tmp_path / "faults.toml", variants=["undercomplete", "segfault", "sigkill", "memhog"],
                 memory_limit_mb=4096, **QUICK)
    data = os.path.relpath(tiny_dataset_dir, tmp_path)
    done = _aebench("run", "faults.toml", "--data-dir", data, "--store", "s.sqlite", "--no-report", cwd=tmp_path,
                    env=_env())
    fault_log.faults += 3
    with open_store(tmp_path / "s.sqlite", create=False) as store:
        results = {r.cell.variant: r for r in store.results(store.resolve_run(None))}
    fault_log.cells_lost += 4 - len(results)
    assert done.returncode == 1, done.stderr  # cells failed; the run itself is complete
    assert len(results) == 4
    assert results["undercomplete"].status == "ok", results["undercomplete"].stderr_tail
    segfault, killed, hog = (results[v] for v in ("segfault", "sigkill", "memhog"))
    assert (segfault.status, segfault.exit_code) == ("failed", -11) and segfault.error.startswith("killed by signal 11")
    assert (killed.status, killed.exit_code) == ("failed", -9) and killed.error.startswith("killed by signal 9")
    assert hog.status == "failed" and "MemoryError" in hog.error and "MemoryError" in hog.stderr_tail
    assert hog.exit_code == 1


@pytest.mark.slow
def test_a_cell_that_hangs_is_killed_at_its_timeout(tmp_path: Path, tiny_dataset_dir: Path,
                                                    fault_log: FaultLog) -> None:
    matrix = write_matrix(tmp_path / "hang.toml", variants=["hang"], timeout_s=3, **QUICK)  # alone: nothing else races
    done = _aebench("run", str(matrix), "--data-dir", str(tiny_dataset_dir), "--store", str(tmp_path / "s.sqlite"),
                    "--no-report", cwd=tmp_path, env=_env())
    fault_log.faults += 1
    with open_store(tmp_path / "s.sqlite", create=False) as store:
        results = store.results(store.resolve_run(None))
    fault_log.cells_lost += 1 - len(results)
    assert done.returncode == 1 and len(results) == 1
    assert (results[0].status, results[0].exit_code) == ("timeout", -9) and "3 s timeout" in results[0].error


# -- the runner stopped mid-sweep, then resumed ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_a_runner_stopped_mid_sweep_leaves_nothing_running_and_resume_completes_the_run(
        tmp_path: Path, tiny_dataset_dir: Path, fault_log: FaultLog, stop: signal.Signals) -> None:
    gate = tmp_path / "gate"
    env = _env(AEBENCH_FAULT_GATE=str(gate))
    matrix = write_matrix(tmp_path / "m.toml", variants=["undercomplete", "sleepy"], **QUICK)
    args = [str(matrix), "--data-dir", str(tiny_dataset_dir), "--store", str(tmp_path / "s.sqlite"), "--no-report"]
    log = tmp_path / "runner.log"  # a file, not a pipe: reading a pipe would wait for a runner that never ends
    with open(log, "w") as stderr:
        runner_process = subprocess.Popen([sys.executable, "-m", "aebench.cli", "run", *args], cwd=tmp_path, env=env,
                                          stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 300
        while not Path(f"{gate}.started").exists():  # the second cell runs, the first is stored
            assert runner_process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        runner_process.send_signal(stop)
        status = runner_process.wait(timeout=60)
    finally:
        if runner_process.poll() is None:
            runner_process.kill()
            runner_process.wait()
    fault_log.faults += 1
    assert status == {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGKILL: -9}[stop]

    deadline = time.monotonic() + 8  # the host notices its runner is gone within a second; the cell dies with it
    while _processes_with("AEBENCH_FAULT_GATE", str(gate)) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = _processes_with("AEBENCH_FAULT_GATE", str(gate))
    for process in left:  # the test stops what the code under test failed to
        process.kill()
    assert not left, [process.cmdline() for process in left]

    with open_store(tmp_path / "s.sqlite", create=False) as store:
        run_id = store.resolve_run(None)
        before = store.results(run_id, with_artifacts=False)
        assert store.run_record(run_id)["status"] == ("abandoned" if stop == signal.SIGKILL else "interrupted")
    assert [r.cell.variant for r in before] == ["undercomplete"]
    listed = _aebench("list", "--store", str(tmp_path / "s.sqlite"), cwd=tmp_path, env=env)
    assert listed.returncode == 0 and ("abandoned" if stop == signal.SIGKILL else "interrupted") in listed.stdout

    gate.touch()  # the sleepy cell goes through this time
    resumed = _aebench("run", *args, "--resume", cwd=tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stderr
    with open_store(tmp_path / "s.sqlite", create=False) as store:
        after = store.results(run_id, with_artifacts=False)
        record = store.run_record(run_id)
    fault_log.cells_lost += sum(r not in after for r in before)
    assert [r.cell.variant for r in after] == ["undercomplete", "sleepy"] and after[0] == before[0]
    assert record["status"] == "complete" and len(store_runs(tmp_path / "s.sqlite")) == 1
    summary = record["summary"]
    assert summary["overhead_s"] >= 0 and [i["status"] for i in summary["invocations"]] == [
        "abandoned" if stop == signal.SIGKILL else "interrupted", "complete"]


def store_runs(path: Path) -> list[str]:
    with open_store(path, create=False) as store:
        return list(store.runs_frame()["run_id"])


# -- the store: full, corrupt, from the future, written by two processes at once -------------------------------------


def _fake_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cells that finish at once, so the store's faults are the subject."""
    def every_cell_ok(matrix: object, cells: list, *, on_result, **ignored: object) -> list:
        for cell in cells:
            on_result(CellResult(cell=cell, status="ok", duration_s=1.0, metrics={"quality.mse": 0.01}))
        return []

    monkeypatch.setattr("aebench.runner.run_cells", every_cell_ok)


def test_a_store_that_fills_up_stops_the_sweep_keeping_every_stored_cell(
        tmp_path: Path, tiny_dataset_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
        fault_log: FaultLog) -> None:
    _fake_sweep(monkeypatch)
    matrix = write_matrix(tmp_path / "m.toml", variants=["undercomplete"], noise=[0.1, 0.2, 0.3], **QUICK)
    args = ["run", str(matrix), "--data-dir", str(tiny_dataset_dir), "--store", str(tmp_path / "s.sqlite"),
            "--no-report"]
    real_add = Store.add_result
    writes: list[int] = []

    def add_until_full(self: Store, run_id: str, result: CellResult) -> None:
        writes.append(1)
        if len(writes) == 2:  # the disk fills up under the second cell's result
            raise sqlite3.OperationalError("database or disk is full")
        real_add(self, run_id, result)

    monkeypatch.setattr(Store, "add_result", add_until_full)
    assert main(args) == 3
    err = capsys.readouterr().err
    fault_log.faults += 1
    assert "cannot be written (database or disk is full): the cells stored so far are kept" in err
    monkeypatch.setattr(Store, "add_result", real_add)  # room again
    with open_store(tmp_path / "s.sqlite", create=False) as store:
        run_id = store.resolve_run(None)
        before = store.results(run_id)
        assert store.run_record(run_id)["status"] == "interrupted"
    assert main([*args, "--resume"]) == 0
    with open_store(tmp_path / "s.sqlite", create=False) as store:
        after = store.results(run_id)
    fault_log.cells_lost += sum(r not in after for r in before)
    assert len(before) == 1 and [r.cell.noise for r in after] == [0.1, 0.2, 0.3] and after[0] == before[0]


def test_a_report_that_cannot_be_written_keeps_the_results(tmp_path: Path, tiny_dataset_dir: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture, fault_log: FaultLog) -> None:
    _fake_sweep(monkeypatch)

    def disk_full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("aebench.report.write_report", disk_full)
    matrix = write_matrix(tmp_path / "m.toml", variants=["undercomplete"], **QUICK)
    status = main(["run", str(matrix), "--data-dir", str(tiny_dataset_dir), "--store", str(tmp_path / "s.sqlite"),
                   "--reports-dir", str(tmp_path / "reports")])
    err = capsys.readouterr().err
    fault_log.faults += 1
    with open_store(tmp_path / "s.sqlite", create=False) as store:
        run_id = store.resolve_run(None)
        stored = store.results(run_id)
        fault_log.cells_lost += 1 - len(stored)
        assert store.run_record(run_id)["status"] == "complete"
    assert status == 3 and len(stored) == 1
    assert f"the report cannot be written in {tmp_path / 'reports'} (No space left on device)" in err
    assert f"`aebench report {run_id}` writes it later" in err


def test_many_writers_to_one_store_lose_and_duplicate_nothing(store_location: str | Path, fault_log: FaultLog) -> None:
    """Two processes on SQLite (one machine), four on PostgreSQL (a fleet), each appending a 40-cell run at once."""
    writer = ("import sys\nfrom aebench.config import Matrix\nfrom aebench.results import CellResult\n"
              "from aebench.store import open_store\nfrom support import tiny_matrix_dict\n"
              "matrix = Matrix.from_dict(tiny_matrix_dict(variants=['conv'], noise=[i / 100 for i in range(40)]))\n"
              "with open_store(sys.argv[1]) as store:\n"
              "    run = store.begin_run(matrix, {}, [])\n"
              "    for cell in matrix.cells():\n"
              "        store.add_result(run, CellResult(cell=cell, status='ok', duration_s=1.0))\n"
              "    store.finish_run(run, 'complete', 1.0, {})\n")
    count = 2 if isinstance(store_location, Path) else 4
    open_store(store_location).close()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    writers = [subprocess.Popen([sys.executable, "-c", writer, str(store_location)], env=env,
                                stderr=subprocess.PIPE, text=True) for _ in range(count)]
    statuses = [process.wait(timeout=120) for process in writers]
    fault_log.faults += 1
    with open_store(store_location, create=False) as store:
        runs = store.runs_frame()
        rows = [(run_id, result.cell.index) for run_id in runs["run_id"]
                for result in store.results(run_id, with_artifacts=False)]
    fault_log.cells_lost += 40 * count - len(set(rows))
    assert statuses == [0] * count, [process.stderr.read() for process in writers]
    assert len(rows) == len(set(rows)) == 40 * count and runs["status"].tolist() == ["complete"] * count


# -- bad input: one line, exit 2, nothing written ----------------------------------------------------------------------


def test_bad_stores_folders_and_plugins_are_one_line_exit_2_with_nothing_written(
        tmp_path: Path, tiny_dataset_dir: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
        fault_log: FaultLog) -> None:
    matrix = write_matrix(tmp_path / "m.toml", variants=["undercomplete"], **QUICK)
    corrupt = tmp_path / "corrupt.sqlite"
    corrupt.write_bytes(b"SQLite format 3\x00" + os.urandom(2000))
    future = tmp_path / "future.sqlite"
    open_store(future).close()
    with sqlite3.connect(future) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    cases = [
        (["--store", str(corrupt)], "is not an aebench result store"),
        (["--store", str(future)], "has store schema version 99; this aebench reads version 2"),
        (["--store", str(tmp_path / "s.sqlite"), "--reports-dir", str(a_file / "reports")],
         f"--reports-dir {a_file / 'reports'} cannot be written"),
    ]
    snapshot = {path: path.read_bytes() for path in (corrupt, future)}
    for extra, message in cases:
        status = main(["run", str(matrix), "--data-dir", str(tiny_dataset_dir), *extra])
        err = capsys.readouterr().err
        fault_log.bad_inputs += 1
        assert status == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert {path: path.read_bytes() for path in snapshot} == snapshot and not (tmp_path / "s.sqlite").exists()

    broken = subprocess.run([sys.executable, "-m", "aebench.cli", "run", str(matrix), "--dry-run"],
                            capture_output=True, text=True, env=_env(AEBENCH_PLUGINS="fault_plugin,fault_plugin"))
    fault_log.bad_inputs += 1
    assert broken.returncode == 2 and len(broken.stderr.strip().splitlines()) == 1
    assert "defines variant 'segfault', which exists already" in broken.stderr
