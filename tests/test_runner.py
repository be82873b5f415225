from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aebench import runner
from aebench.config import Matrix
from aebench.results import CellResult
from support import tiny_matrix_dict

FAKE_HOST = Path(__file__).with_name("fake_host.py")
NO_SKIPS = runner.SkipCheck(usable_cpus=2, accelerators={}, backend_problems={})


def _fake_factory(behaviours: str):
    def factory(backend: str, log: Path) -> runner.WorkerHost:
        return runner.WorkerHost(backend, log, command=[sys.executable, str(FAKE_HOST), behaviours], env={"PATH": "/usr/bin:/bin"})

    return factory


def test_failures_are_results_and_the_sweep_goes_on(tmp_path: Path) -> None:
    matrix = Matrix.from_dict(tiny_matrix_dict(variants=["conv"], noise=[0.0, 0.1, 0.2, 0.3], timeout_s=1.5))
    stored: list[CellResult] = []
    results = runner.run_cells(matrix, matrix.cells(), data_path=tmp_path / "unused.npz", skip_check=NO_SKIPS,
                               on_result=stored.append, work_dir=tmp_path, host_factory=_fake_factory("crash,hang,segv,ok"),
                               progress=runner.Progress(4, stream=io.StringIO()))
    assert stored == results
    crash, hang, segv, ok = results
    assert crash.status == "failed" and crash.exit_code == 3
    assert crash.error == "ValueError: the model exploded" and "cell 0 does crash" in crash.stderr_tail
    assert hang.status == "timeout" and hang.exit_code == -9 and "1.5 s timeout" in hang.error
    assert segv.status == "failed" and segv.exit_code == -11 and segv.error.startswith("killed by signal 11")
    assert ok.status == "ok" and ok.metrics["quality.mse"] == 0.01 and ok.info["fake"] is True


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_stopped_runner_kills_its_running_cell(tmp_path: Path, stop: signal.Signals) -> None:
    """No cell outlives its runner: stopped mid-cell (Ctrl-C, a CI timeout's SIGTERM, a closed terminal's SIGHUP),
    the runner unwinds and the hanging cell it forked is killed, not left timing on the pinned cores."""
    from aebench.cli import stop_like_ctrl_c

    matrix = Matrix.from_dict(tiny_matrix_dict(variants=["conv"], timeout_s=600))
    hosts: list[runner.WorkerHost] = []
    cell_pids: list[int] = []

    def factory(backend: str, log: Path) -> runner.WorkerHost:
        hosts.append(_fake_factory("hang")(backend, log))
        return hosts[-1]

    def stop_when_the_cell_runs(signum: int, frame: object) -> None:
        if hosts and hosts[0].running_cell_pid is not None:
            cell_pids.append(hosts[0].running_cell_pid)
            os.kill(os.getpid(), stop)  # delivered to this (main) thread, as a signal to the runner would be

    previous = signal.signal(signal.SIGALRM, stop_when_the_cell_runs)
    signal.setitimer(signal.ITIMER_REAL, 0.2, 0.2)
    try:
        with pytest.raises(KeyboardInterrupt), stop_like_ctrl_c():
            runner.run_cells(matrix, matrix.cells()[:1], data_path=tmp_path / "unused.npz", skip_check=NO_SKIPS,
                             on_result=lambda r: None, work_dir=tmp_path, host_factory=factory,
                             progress=runner.Progress(1, stream=io.StringIO()))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert cell_pids, "the cell never started"
    deadline = time.monotonic() + 10
    while _alive(cell_pids[0]) and time.monotonic() < deadline:
        time.sleep(0.05)
    survived = _alive(cell_pids[0])
    if survived:  # the test cleans up what the code under test failed to
        os.kill(cell_pids[0], signal.SIGKILL)
    assert not survived


# A runner that starts a worker host, which forks a cell that never ends, as aebench.worker's host and cell do.
HOST = """
import os, sys, time
from aebench.worker import _die_with_parent, _watch_runner
_watch_runner(os.getppid(), interval_s=0.1)
cell = os.fork()
if cell == 0:
    _die_with_parent()
    while True:
        time.sleep(1)
print(os.getpid(), cell, flush=True)
os.waitpid(cell, 0)
"""
RUNNER = f"""
import subprocess, sys
host = subprocess.Popen([sys.executable, "-c", {HOST!r}], stdout=subprocess.PIPE, text=True)
print(host.stdout.readline().strip(), flush=True)
sys.stdin.read()
"""


def test_a_runner_killed_with_sigkill_leaves_no_process_behind() -> None:
    """SIGKILL reaches no handler: the host notices its runner is gone and dies, and the kernel kills its cell."""
    runner_process = subprocess.Popen([sys.executable, "-c", RUNNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      text=True)
    host_pid, cell_pid = (int(pid) for pid in runner_process.stdout.readline().split())
    try:
        assert _alive(host_pid) and _alive(cell_pid)
        runner_process.kill()
        runner_process.wait(timeout=10)
        deadline = time.monotonic() + 8
        while (_alive(host_pid) or _alive(cell_pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(host_pid) and not _alive(cell_pid)
    finally:  # the test stops what the code under test failed to
        for pid in (host_pid, cell_pid):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """True while the process runs (a zombie, dead but not yet reaped by init, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_wait_idle_waits_before_each_cell_and_records_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loads = iter([80.0, 2.0, 1.0])  # the first cell's CPUs are busy for one sample, then quiet
    sampled: list[list[int]] = []

    def fake_busy_pct(cpus: list[int], seconds: float = 0.5) -> float:
        sampled.append(list(cpus))
        return next(loads)

    monkeypatch.setattr("aebench.load.busy_pct", fake_busy_pct)
    matrix = Matrix.from_dict(tiny_matrix_dict(variants=["conv"], noise=[0.0, 0.1], threads=[1]))
    results = runner.run_cells(matrix, matrix.cells(), data_path=tmp_path / "unused.npz", skip_check=NO_SKIPS,
                               on_result=lambda r: None, work_dir=tmp_path, host_factory=_fake_factory("ok,ok"),
                               progress=runner.Progress(2, stream=io.StringIO()), wait_idle_s=30.0)
    assert [r.info["load_before_pct"] for r in results] == [2.0, 1.0] and len(sampled) == 3
    assert all(len(cpus) == 1 for cpus in sampled)  # the CPUs a 1-thread cell pins


def test_a_metric_missing_from_the_registry_fails_the_cell(tmp_path: Path) -> None:
    matrix = Matrix.from_dict(tiny_matrix_dict(variants=["conv"], noise=[0.0, 0.1]))
    results = runner.run_cells(matrix, matrix.cells(), data_path=tmp_path / "unused.npz", skip_check=NO_SKIPS,
                               on_result=lambda r: None, work_dir=tmp_path, host_factory=_fake_factory("unknown,ok"),
                               progress=runner.Progress(2, stream=io.StringIO()))
    unknown, ok = results
    assert unknown.status == "failed" and unknown.exit_code == 0 and not unknown.metrics
    assert unknown.error == "metrics not in the registry (aebench.metrics): quality.made_up, speed.nonsense_ips"
    assert "cell 0 does unknown" in unknown.stderr_tail
    assert ok.status == "ok"  # the sweep goes on


def test_another_revisions_metrics_are_kept_when_asked(tmp_path: Path) -> None:
    """aebench ab runs other revisions' workers, which may define metrics this registry lacks."""
    matrix = Matrix.from_dict(tiny_matrix_dict(variants=["conv"]))
    hosts: dict = {}
    result = runner.run_one(matrix, matrix.cells()[0], tmp_path / "unused.npz", tmp_path, hosts,
                             _fake_factory("unknown"), time.monotonic, None, check_metrics=False)
    for host in hosts.values():
        host.close()
    assert result.status == "ok" and set(result.metrics) >= {"quality.made_up", "speed.nonsense_ips"}


def test_a_dead_host_fails_the_cell_and_is_restarted(tmp_path: Path) -> None:
    matrix = Matrix.from_dict(tiny_matrix_dict(variants=["conv"], noise=[0.0, 0.1]))
    starts = []

    def factory(backend: str, log: Path) -> runner.WorkerHost:
        starts.append(backend)
        # The first host exits at once after saying it is ready; the second works.
        script = "import json;print(json.dumps({'event':'ready','pid':0}),flush=True)" if len(starts) == 1 else None
        command = [sys.executable, "-c", script] if script else [sys.executable, str(FAKE_HOST), "ok,ok"]
        return runner.WorkerHost(backend, log, command=command, env={"PATH": "/usr/bin:/bin"})

    results = runner.run_cells(matrix, matrix.cells(), data_path=tmp_path / "x", skip_check=NO_SKIPS, on_result=lambda r: None,
                               work_dir=tmp_path, host_factory=factory, progress=runner.Progress(2, stream=io.StringIO()))
    assert [r.status for r in results] == ["failed", "ok"]
    assert "worker host" in results[0].error and len(starts) == 2


def test_a_host_that_breaks_the_protocol_or_a_malformed_result_fails_the_cell_not_the_sweep(tmp_path: Path) -> None:
    matrix = Matrix.from_dict(tiny_matrix_dict(variants=["conv"], noise=[0.0, 0.1, 0.2]))
    logs: list[Path] = []

    def factory(backend: str, log: Path) -> runner.WorkerHost:
        logs.append(log)
        return _fake_factory("chatter,malformed,ok")(backend, log)

    results = runner.run_cells(matrix, matrix.cells(), data_path=tmp_path / "x", skip_check=NO_SKIPS,
                               on_result=lambda r: None, work_dir=tmp_path, host_factory=factory,
                               progress=runner.Progress(3, stream=io.StringIO()))
    chatter, malformed, ok = results
    assert chatter.status == "failed" and "broke the protocol with b'hello from a plugin'" in chatter.error
    # The tail comes from the log of the host that died, wherever it was started.
    assert "the host's own last words" in chatter.stderr_tail
    assert malformed.status == "failed" and malformed.error == "unusable result: KeyError: 'metrics'"
    assert ok.status == "ok" and len(logs) == 2  # a new host after the one that broke


def test_a_host_that_dies_before_it_is_ready_leaves_nothing_open(tmp_path: Path) -> None:
    import psutil

    this = psutil.Process()
    before = (this.num_fds(), {child.pid for child in this.children()})  # the session's servers are children too
    for _ in range(3):
        with pytest.raises(runner.HostDied):
            runner.WorkerHost("tensorflow", tmp_path / "host.log", command=[sys.executable, "-c", "raise SystemExit(3)"],
                              env={"PATH": "/usr/bin:/bin"})
    assert (this.num_fds(), {child.pid for child in this.children()}) == before


def test_a_host_that_dies_while_starting_reports_the_tail_of_the_log_it_wrote(tmp_path: Path) -> None:
    """A cluster node's factory logs where it chooses, not where run_one asked: the failed cell's stderr tail comes
    from the log the host actually wrote."""
    elsewhere = tmp_path / "node-logs"
    elsewhere.mkdir()

    def factory(backend: str, log: Path) -> runner.WorkerHost:
        return runner.WorkerHost(backend, elsewhere / log.name, env={"PATH": "/usr/bin:/bin"}, command=[
            sys.executable, "-c", "import sys; sys.stderr.write('ImportError: no keras here\\n'); raise SystemExit(3)"])

    matrix = Matrix.from_dict(tiny_matrix_dict(variants=["undercomplete"], noise=[0.0]))
    (cell,) = matrix.cells()
    result = runner.run_one(matrix, cell, tmp_path / "x", tmp_path, {}, factory, time.monotonic, None)
    assert result.status == "failed" and "exited with status 3" in result.error
    assert "ImportError: no keras here" in result.stderr_tail


def test_a_host_that_has_exited_is_replaced_not_handed_out(tmp_path: Path) -> None:
    hosts: dict[str, runner.WorkerHost] = {}
    first = runner.host_for(hosts, "tensorflow", _fake_factory("ok"), tmp_path / "a.log")
    assert runner.host_for(hosts, "tensorflow", _fake_factory("ok"), tmp_path / "b.log") is first
    first.kill()  # as a stopped cluster driver does to the hosts of its cells
    first._process.wait(timeout=30)
    second = runner.host_for(hosts, "tensorflow", _fake_factory("ok"), tmp_path / "c.log")
    assert second is not first and second.alive and hosts == {"tensorflow": second}
    second.close()


def test_a_cells_duration_leaves_out_the_start_of_the_host_it_runs_on(tmp_path: Path) -> None:
    matrix = Matrix.from_dict(tiny_matrix_dict(variants=["conv"], noise=[0.0]))
    now = [0.0]

    def slow_start(backend: str, log: Path) -> runner.WorkerHost:
        now[0] += 100.0  # the framework import of a new host, on the fake clock
        return _fake_factory("ok")(backend, log)

    (result,) = runner.run_cells(matrix, matrix.cells(), data_path=tmp_path / "x", skip_check=NO_SKIPS,
                                 on_result=lambda r: None, work_dir=tmp_path, host_factory=slow_start,
                                 clock=lambda: now[0], progress=runner.Progress(1, stream=io.StringIO()))
    assert result.status == "ok" and result.duration_s == 0.0


def test_skipped_cells_never_start_a_process(tmp_path: Path) -> None:
    matrix = Matrix.from_dict(tiny_matrix_dict(variants=["conv"], device=["cpu", "gpu"], threads=[1, 4]))
    check = runner.SkipCheck(usable_cpus=2, accelerators={("tensorflow", "gpu"): 0}, backend_problems={})

    def no_host(backend: str, log: Path) -> runner.WorkerHost:
        raise AssertionError("no host should start")

    out = io.StringIO()
    results = runner.run_cells(matrix, [c for c in matrix.cells() if c.threads != 1], data_path=tmp_path, skip_check=check,
                               on_result=lambda r: None, work_dir=tmp_path, host_factory=no_host, progress=runner.Progress(2, stream=out))
    assert [r.status for r in results] == ["skipped", "skipped"]
    assert "threads=4 needs 4 CPUs" in results[0].error
    assert "no GPU visible to tensorflow" in results[1].error
    assert "[2/2] skipped" in out.getvalue()


def test_skip_reasons() -> None:
    matrix = Matrix.from_dict(tiny_matrix_dict(variants=["conv"], backend=["tensorflow", "jax"], precision=["float32", "mixed_float16"]))
    check = runner.SkipCheck(usable_cpus=2, accelerators={}, backend_problems={"jax": "backend jax is not installed"})
    reasons = {(c.backend, c.precision): check.reason(c) for c in matrix.cells()}
    assert reasons[("tensorflow", "float32")] is None
    assert "GPUs only" in reasons[("tensorflow", "mixed_float16")]
    assert reasons[("jax", "float32")] == "backend jax is not installed"


def test_progress_eta_uses_a_fake_clock() -> None:
    matrix = Matrix.from_dict(tiny_matrix_dict(variants=["conv"], noise=[0.0, 0.1, 0.2, 0.3]))
    cells = matrix.cells()
    now = [100.0]
    out = io.StringIO()
    with runner.Progress(4, stream=out, clock=lambda: now[0]) as progress:
        assert progress.eta_s() is None
        now[0] = 110.0
        progress.update(CellResult(cell=cells[0], status="ok", duration_s=10.0))
        assert progress.eta_s() == pytest.approx(30.0)
        now[0] = 130.0
        progress.update(CellResult(cell=cells[1], status="ok", duration_s=20.0))
        assert progress.eta_s() == pytest.approx(30.0)  # mean 15 s x 2 cells left
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[1/4] ok") and "elapsed 0:00:10  ETA 0:00:30" in lines[0]
    assert "elapsed 0:00:30" in lines[1]


def test_progress_in_a_ci_log_is_one_plain_line_per_cell(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")  # set by many CI services; rich then takes any stream for a terminal
    cells = Matrix.from_dict(tiny_matrix_dict(variants=["conv"], noise=[0.0, 0.1])).cells()
    out = io.StringIO()
    with runner.Progress(2, stream=out, clock=lambda: 0.0) as progress:
        progress.note("reference classifier loaded")
        progress.update(CellResult(cell=cells[0], status="failed", duration_s=1.0, error="boom"))
    assert out.getvalue() == (
        "aebench: reference classifier loaded\n"
        f"[1/2] failed  {cells[0].label:<60}     1.0s  elapsed 0:00:00  ETA 0:00:01\n"
    )


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_draws_a_bar_under_the_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm-256color")
    for name in ("TTY_INTERACTIVE", "TTY_COMPATIBLE", "FORCE_COLOR"):
        monkeypatch.delenv(name, raising=False)
    cells = Matrix.from_dict(tiny_matrix_dict(variants=["conv"], noise=[0.0, 0.1, 0.2, 0.3])).cells()
    now = [100.0]
    out = _Terminal()
    with runner.Progress(4, stream=out, clock=lambda: now[0]) as progress:
        now[0] = 110.0
        progress.update(CellResult(cell=cells[0], status="ok", duration_s=10.0))
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())  # without the terminal's colour and cursor codes
    assert "[1/4] ok" in text and "elapsed 0:00:10  ETA 0:00:30" in text
    assert "1/4 cells  elapsed 0:00:10 ETA 0:00:30" in text  # the bar's last state, drawn as the sweep ends


def test_worker_environment_is_allow_listed() -> None:
    env = runner.worker_environment("jax", {"PATH": "/bin", "SECRET_TOKEN": "x", "AEBENCH_DATA": "/d", "KERAS_BACKEND": "torch"})
    assert env["KERAS_BACKEND"] == "jax" and env["AEBENCH_DATA"] == "/d" and "SECRET_TOKEN" not in env


def _threads_matrix(**overrides: object) -> Matrix:
    return Matrix.from_dict(tiny_matrix_dict(**{"variants": ["conv"], "noise": [0.1, 0.2], "threads": [1, 2],
                                                **overrides}))


def test_each_model_trains_once_on_its_most_threads_and_the_others_share_its_quality(tmp_path: Path) -> None:
    matrix = _threads_matrix()
    results = runner.run_cells(matrix, matrix.cells(), data_path=tmp_path / "unused.npz", skip_check=NO_SKIPS,
                               on_result=lambda result: None, work_dir=tmp_path, host_factory=_fake_factory("ok," * 4),
                               progress=runner.Progress(4, stream=io.StringIO()), weights_root=tmp_path / "weights")
    # The 2-thread cell of each model runs first and trains; the 1-thread cell times the weights it saved.
    assert [(r.cell.noise, r.cell.threads, r.info["trains"]) for r in results] == [
        (0.1, 2, True), (0.1, 1, False), (0.2, 2, True), (0.2, 1, False)]
    for trainer, timer in (results[0:2], results[2:4]):
        assert trainer.info["trained_by"] == timer.info["trained_by"] == trainer.cell.key
        assert timer.metrics["quality.mse"] == trainer.metrics["quality.mse"] == 0.01  # shared, not measured twice
        assert (timer.metrics["speed.infer_ips"], trainer.metrics["speed.infer_ips"]) == (1000.0, 2000.0)  # its own
        assert timer.info["weights_path"] == trainer.info["weights_path"] == \
            str(runner.weights_file(tmp_path / "weights", trainer.cell))
        assert "timing.train_s" not in timer.metrics  # its time is its own: it trained nothing


def test_a_failed_training_cell_fails_the_cells_that_would_time_its_weights(tmp_path: Path) -> None:
    matrix = _threads_matrix()
    # Cell indexes: 0 = noise 0.1 on 1 thread, 1 = noise 0.1 on 2 threads (its trainer), 2, 3 likewise at 0.2.
    results = runner.run_cells(matrix, matrix.cells(), data_path=tmp_path / "unused.npz", skip_check=NO_SKIPS,
                               on_result=lambda result: None, work_dir=tmp_path,
                               host_factory=_fake_factory("ok,crash,ok,ok"),
                               progress=runner.Progress(4, stream=io.StringIO()))
    trainer, dependent = results[0], results[1]
    assert (trainer.cell.threads, trainer.status) == (2, "failed")
    assert dependent.status == "failed" and dependent.exit_code is None
    assert dependent.error.startswith("not run: conv noise=0.1 cpu threads=2") and "the model exploded" in dependent.error
    assert [r.status for r in results[2:]] == ["ok", "ok"]  # the sweep goes on


def test_a_resumed_run_times_the_weights_an_earlier_invocation_trained(tmp_path: Path) -> None:
    matrix = _threads_matrix(noise=[0.1])
    weights = tmp_path / "weights"
    first = runner.run_cells(matrix, [c for c in matrix.cells() if c.threads == 2], data_path=tmp_path / "x.npz",
                             skip_check=NO_SKIPS, on_result=lambda result: None, work_dir=tmp_path,
                             host_factory=_fake_factory("ok,ok"), progress=runner.Progress(1, stream=io.StringIO()),
                             weights_root=weights)
    rest = [c for c in matrix.cells() if c.threads == 1]
    resumed = runner.run_cells(matrix, rest, data_path=tmp_path / "x.npz", skip_check=NO_SKIPS,
                               on_result=lambda result: None, work_dir=tmp_path, host_factory=_fake_factory("ok,ok"),
                               progress=runner.Progress(1, stream=io.StringIO()), weights_root=weights,
                               trained_before={first[0].cell.quality_key: first[0]})
    assert resumed[0].info["trains"] is False and resumed[0].info["trained_by"] == first[0].cell.key
    assert resumed[0].metrics["quality.mse"] == 0.01
    # Without the weights on disk (a finished run deleted them) the cell trains its model itself.
    runner.weights_file(weights, first[0].cell).unlink()
    again = runner.run_cells(matrix, rest, data_path=tmp_path / "x.npz", skip_check=NO_SKIPS,
                             on_result=lambda result: None, work_dir=tmp_path, host_factory=_fake_factory("ok,ok"),
                             progress=runner.Progress(1, stream=io.StringIO()), weights_root=weights,
                             trained_before={first[0].cell.quality_key: first[0]})
    assert again[0].info["trains"] is True and again[0].info["trained_by"] == again[0].cell.key


def test_a_thread_count_this_machine_skips_never_trains() -> None:
    matrix = _threads_matrix(threads=[1, 2, 4])
    skip = runner.SkipCheck(usable_cpus=2, accelerators={}, backend_problems={})
    runnable = [cell for cell in matrix.cells() if skip.reason(cell) is None]
    plan = runner.plan_training(runnable)
    assert {cell.threads for cell in plan.trainers.values()} == {2}
    assert [c.threads for c in plan.order(matrix.cells())][:3] == [2, 1, 4]
