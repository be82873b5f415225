"""The matrix runner: one isolated worker process per cell, a timeout and a kill guard for each, progress and ETA.

Each model trains once. The cells of one quality key (every thread count of a variant at a noise level, device,
backend, precision and seed) share it: the one with the most threads trains it, with its quality clock, saves the
weights and scores them; then every other thread count, each in its own pinned worker process, loads those weights
and times inference and a fixed number of training steps. Their rows carry the training cell's quality figures and
name it (``info.trained_by``). See ``plan_training``.

Cells run one after another (they are benchmarks: two at once would time each other). For each Keras backend a
worker host is started once; it forks a fresh child per cell (see aebench.worker). A cell that crashes, times out,
cannot run on this machine or writes a metric the registry (aebench.metrics) lacks becomes a stored result with its
status, exit code and stderr tail, and the sweep goes on.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import rich.progress
from rich.console import Console

from aebench import machine
from aebench import quiet
from aebench.config import Cell, Matrix
from aebench.metrics import REGISTRY
from aebench.results import CellResult

Clock = Callable[[], float]
STDERR_TAIL_LINES = 30
# Only these variables reach a worker: a benchmark must not depend on whatever the caller's shell exported.
ENV_ALLOWLIST = (
    "PATH", "HOME", "USER", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV", "LD_LIBRARY_PATH",
    "KERAS_HOME", "CUDA_VISIBLE_DEVICES", "XLA_FLAGS", "TPU_NAME", "JAX_PLATFORMS",
)


def worker_environment(backend: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    base = os.environ if base is None else base
    env = {key: base[key] for key in ENV_ALLOWLIST if key in base}
    # aebench's own settings pass on, except the calibration spike-in: only `aebench ab --calibrate` sets it, on the
    # hosts it starts itself, so a stray variable in the shell can never slow a real run.
    env.update({key: value for key, value in base.items() if key.startswith("AEBENCH_") and key != "AEBENCH_SPIKE"})
    env["KERAS_BACKEND"] = backend
    env["PYTHONHASHSEED"] = "0"
    env["PYTHONUNBUFFERED"] = "1"
    env[machine.CPU_INFO_VARIABLE] = machine.cpu_info_for_workers()  # read once here, not once per cell
    env.setdefault(quiet.LOG_LEVEL_VARIABLE, quiet.QUIET_LOG_LEVEL)  # TensorFlow's start-up chatter out of the tails
    return env


class HostDied(RuntimeError):
    """The worker host itself exited or stopped answering (not a cell's fault). ``log_path`` is the log of a host
    that died while starting: it never became a host the caller holds, so only the error knows where it logged."""

    def __init__(self, message: str, log_path: Path | None = None) -> None:
        super().__init__(message)
        self.log_path = log_path


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class WorkerHost:
    """A long-lived ``python -m aebench.worker serve`` process for one backend."""

    def __init__(self, backend: str, log_path: Path, command: list[str] | None = None,
                 env: Mapping[str, str] | None = None, start_timeout_s: float = 300.0) -> None:
        self.backend = backend
        self.log_path = log_path  # its stderr: the tail a failed cell reports when the host dies under it
        self._command = command or [sys.executable, "-m", "aebench.worker", "serve"]
        self._log = open(log_path, "ab")
        # A process group of its own, which the cells it forks join: close() kills the group, so no cell of any
        # revision's worker outlives its host; and Ctrl-C in a terminal reaches the runner alone, which stops them.
        self._process = subprocess.Popen(
            self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            env=dict(env) if env is not None else worker_environment(backend), start_new_session=True,
        )
        self._buffer = b""
        self.running_cell_pid: int | None = None  # the forked cell while one runs: killed if the runner stops
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._process.stdout, selectors.EVENT_READ)
        try:
            event = self._next_event(time.monotonic() + start_timeout_s)
        except HostDied as error:  # it died while starting: nothing of it may outlive this call
            self.close()
            raise HostDied(str(error), log_path) from None
        except BaseException:  # Ctrl-C: likewise
            self.close()
            raise
        if event is None or event.get("event") != "ready":
            self.close()
            raise HostDied(f"the {backend} worker host did not start (see {log_path})", log_path)

    def _next_event(self, deadline: float) -> dict[str, Any] | None:
        """The next JSON line from the host, or None at the deadline. Raises HostDied if the host exits or says
        something that is not the protocol (a line a plugin printed to stdout, say)."""
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if not self._selector.select(timeout=remaining):
                continue
            chunk = os.read(self._process.stdout.fileno(), 65536)
            if not chunk:
                raise HostDied(f"the {self.backend} worker host exited with status {self._process.wait()}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            raise HostDied(f"the {self.backend} worker host broke the protocol with {line[:200]!r}")
        return event

    def run(self, task: Mapping[str, Any], timeout_s: float) -> tuple[int | None, bool]:
        """Run one task; returns (exit code, timed out). A child past its timeout is killed (SIGKILL)."""
        try:
            self._process.stdin.write((json.dumps(task) + "\n").encode())
            self._process.stdin.flush()
        except (BrokenPipeError, OSError) as error:
            raise HostDied(f"the {self.backend} worker host is gone: {error}") from None
        started = self._next_event(time.monotonic() + 60)
        if started is None or started.get("event") != "started":
            raise HostDied(f"the {self.backend} worker host did not start the cell")
        self.running_cell_pid = started["pid"]
        deadline = time.monotonic() + timeout_s
        exited = self._next_event(deadline)
        if exited is None:
            _kill(started["pid"])
            exited = self._next_event(time.monotonic() + 30)
            timed_out = True
        else:
            timed_out = False
        self.running_cell_pid = None
        return (exited["exit_code"] if exited else None), timed_out

    @property
    def alive(self) -> bool:
        return self._process.poll() is None

    def kill(self) -> None:
        """Kill the running cell and the host, from any thread: the thread waiting on the host sees it exit
        (HostDied) and closes it. What a stopped driver does to the cells it left on a cluster's nodes."""
        if self.running_cell_pid is not None:
            _kill(self.running_cell_pid)
        self._kill_group()

    def _kill_group(self) -> None:
        try:
            os.killpg(self._process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def set_affinity(self, cpus: Iterable[int]) -> None:
        """Move the host to these CPUs; every cell it forks from now on inherits them (aebench ab's duet mode)."""
        os.sched_setaffinity(self._process.pid, set(cpus))

    def close(self) -> None:
        """Stop the host. A cell still running (the runner was interrupted: SIGINT, SIGTERM, SIGHUP) is killed first:
        no cell goes on timing, unsupervised, on the pinned cores after its runner has stopped."""
        if self.running_cell_pid is not None:
            _kill(self.running_cell_pid)
            self.running_cell_pid = None
        if self._process.poll() is None:
            try:
                self._process.stdin.close()
                self._process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait()
        self._kill_group()  # whatever is left of it: a cell an older revision's host forked and lost track of
        self._selector.close()
        self._process.stdout.close()
        self._log.close()


class Progress:
    """The sweep's progress: one line per finished cell (count, status, label, its duration, elapsed time and ETA)
    and, on an interactive terminal, a live bar below those lines. Elsewhere (CI logs, files) only the lines.

    Use it as a context manager around the sweep: that shows the bar and takes it away again."""

    def __init__(self, total: int, stream: TextIO = sys.stderr, clock: Clock = time.monotonic,
                 live: bool | None = None) -> None:
        self.total = total
        self.done = 0
        self._busy_s = 0.0
        self._ran = 0
        console = Console(file=stream, markup=False, highlight=False, emoji=False, soft_wrap=True)
        if live is None:
            # rich counts FORCE_COLOR as a terminal; a CI log that sets it still gets plain lines, no redrawn bar.
            live = console.is_interactive and stream.isatty()
        self._bar = rich.progress.Progress(
            rich.progress.BarColumn(), rich.progress.MofNCompleteColumn(), rich.progress.TextColumn("cells  elapsed"),
            rich.progress.TimeElapsedColumn(), rich.progress.TextColumn("ETA {task.fields[eta]}"),
            console=console, get_time=clock, disable=not live, transient=True,
        )
        self._task = self._bar.add_task("cells", total=total, eta="?")

    def __enter__(self) -> Progress:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def eta_s(self) -> float | None:
        """Mean duration of the cells that ran, times the cells left (skipped cells cost nothing).

        Not rich's own estimate: that one averages completions per second over its last 30 s, which says nothing
        when one cell takes minutes, and it would count skipped cells as work done fast."""
        if self._ran == 0:
            return None
        return self._busy_s / self._ran * (self.total - self.done)

    def note(self, text: str) -> None:
        self._bar.console.print(f"aebench: {text}")

    def update(self, result: CellResult) -> None:
        self.done += 1
        if result.status != "skipped":
            self._busy_s += result.duration_s
            self._ran += 1
        eta = self.eta_s()
        eta_text = _duration_text(eta) if eta is not None else "?"
        self._bar.update(self._task, completed=self.done, eta=eta_text)
        elapsed = self._bar.tasks[0].elapsed or 0.0
        width = len(str(self.total))
        self._bar.console.print(
            f"[{self.done:>{width}}/{self.total}] {result.status:<7} {result.cell.label:<60} "
            f"{result.duration_s:7.1f}s  elapsed {_duration_text(elapsed)}  ETA {eta_text}"
        )


def _duration_text(seconds: float) -> str:
    """H:MM:SS, as rich's elapsed column shows it."""
    return str(timedelta(seconds=round(seconds)))


def tail(path: Path, lines: int = STDERR_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _last_error_line(stderr_tail: str) -> str:
    for line in reversed(stderr_tail.splitlines()):
        if line.strip() and not line.startswith(" "):
            return line.strip()[:300]
    return ""


@dataclass(frozen=True)
class TrainingPlan:
    """Which cell trains each quality key's model in this invocation; the others load its weights.

    ``trainers`` maps a quality key to the cell that trains it here; a key that a stored result of an earlier
    invocation (a resumed run) trained, its weights still on disk, has none."""

    trainers: Mapping[str, Cell]

    def trains(self, cell: Cell) -> bool:
        return self.trainers.get(cell.quality_key) == cell

    def order(self, cells: Iterable[Cell]) -> list[Cell]:
        """The cells in their matrix order, except that each model's training cell runs before its other threads."""
        first_of_key: dict[str, int] = {}
        ranked = []
        for position, cell in enumerate(cells):
            first_of_key.setdefault(cell.quality_key, position)
            ranked.append(((first_of_key[cell.quality_key], not self.trains(cell), position), cell))
        return [cell for _, cell in sorted(ranked, key=lambda pair: pair[0])]


def plan_training(runnable: Iterable[Cell], trained_before: Mapping[str, CellResult] | None = None) -> TrainingPlan:
    """Per quality key, the cell that trains it: the one asking for the most threads (the fastest training run);
    none when ``trained_before`` holds that key's training result. ``runnable`` holds the cells this machine can
    run, so a thread count it must skip never trains."""
    trainers: dict[str, Cell] = {}
    for cell in runnable:
        key = cell.quality_key
        if key in (trained_before or {}):
            continue
        if key not in trainers or (cell.threads or 0) > (trainers[key].threads or 0):
            trainers[key] = cell
    return TrainingPlan(trainers)


def weights_file(weights_root: Path, cell: Cell) -> Path:
    """Where a model's trained weights live for its other thread counts: one file per quality key."""
    return weights_root / (cell.quality_key.replace("/", "_") + ".weights.h5")


def share_training(result: CellResult, source: CellResult) -> CellResult:
    """A timing cell's result completed with what its training cell measured once for the model: the quality and
    diagnostic figures, the training run's speed figures (time to target) and the reference classifier's details.
    Its own speed figures stay its own. The model's arrays (image grid, curves) stay with the training cell, which
    ``info.trained_by`` names: stored once, not once per thread count."""
    metrics = {name: value for name, value in source.metrics.items()
               if (metric := REGISTRY.find(name)) is not None and metric.from_training}
    metrics |= {name: value for name, value in result.metrics.items() if name not in metrics}
    info = {key: source.info[key] for key in SHARED_INFO if key in source.info}
    info |= {**result.info, "trained_by": source.cell.key}
    return replace(result, metrics=metrics, info=info)


SHARED_INFO = ("classifier_cached", "classifier_test_acc")


class SharedTraining:
    """Each model's training as the sweep goes: the result its other thread counts share, or the failure that keeps
    them from running. ``start`` makes one for a sweep (the local runner's or aebench.cluster's)."""

    def __init__(self, plan: TrainingPlan, trained: Mapping[str, CellResult]) -> None:
        self.plan = plan
        self._trained = dict(trained)  # quality key -> its training cell's ok result
        self._failed: dict[str, CellResult] = {}  # quality key -> its training cell's failure

    @classmethod
    def start(cls, runnable: Iterable[Cell], trained_before: Mapping[str, CellResult] | None,
              weights_root: Path) -> SharedTraining:
        """The sweep's plan (``plan_training``) over the ``runnable`` cells, counting as trained the stored training
        results (a resumed run) whose weights are still under ``weights_root``."""
        trained = {key: result for key, result in (trained_before or {}).items()
                   if weights_file(weights_root, result.cell).exists()}
        return cls(plan_training(runnable, trained), trained)

    def trained(self, cell: Cell) -> bool:
        """Whether the weights ``cell`` times exist already (its model's training cell ran, ok)."""
        return cell.quality_key in self._trained

    def blocked(self, cell: Cell) -> CellResult | None:
        """The failed result of a cell whose training cell failed (it has nothing to time); None when it may run."""
        if self.plan.trains(cell) or self.trained(cell):
            return None
        failure = self._failed[cell.quality_key]
        return CellResult(cell=cell, status="failed", duration_s=0.0, error=(
            f"not run: {failure.cell.label}, which trains the weights this cell times, {failure.status}: "
            f"{failure.error}"))

    def settle(self, result: CellResult) -> CellResult:
        """A training cell's result names itself and is kept for the others; theirs gets its shared figures."""
        key = result.cell.quality_key
        if self.plan.trains(result.cell):
            if result.status != "ok":
                self._failed[key] = result
                return result
            result = replace(result, info={**result.info, "trained_by": result.cell.key})
            self._trained[key] = result
            return result
        return share_training(result, self._trained[key]) if result.status == "ok" else result


def precision_problem(cell: Cell) -> str | None:
    """Why the cell's device cannot run its precision, wherever it runs (here or on a cluster's node)."""
    if cell.precision == "mixed_float16" and cell.device == "cpu":
        return "mixed_float16 runs on GPUs only (CPUs have no fast float16 path)"
    if cell.precision == "mixed_float16" and cell.device == "tpu":
        return "mixed_float16 is not supported on TPUs (use mixed_bfloat16)"
    return None


@dataclass(frozen=True)
class SkipCheck:
    """Decides, before any process starts, whether a cell can run here; returns the reason if not."""

    usable_cpus: int
    accelerators: Mapping[tuple[str, str], int]  # (backend, "gpu"|"tpu") -> count
    backend_problems: Mapping[str, str]  # backend -> why it cannot run (not installed, ...)
    # (backend, "gpu"|"tpu") -> why that backend sees none, in its own words (aebench.devices.summarize)
    accelerator_reasons: Mapping[tuple[str, str], str] = field(default_factory=dict)

    def reason(self, cell: Cell) -> str | None:
        if cell.backend in self.backend_problems:
            return self.backend_problems[cell.backend]
        if cell.device == "cpu":
            if cell.threads is not None and cell.threads > self.usable_cpus:
                return f"threads={cell.threads} needs {cell.threads} CPUs; this machine lets aebench use {self.usable_cpus}"
            return precision_problem(cell)
        if self.accelerators.get((cell.backend, cell.device), 0) == 0:
            why = self.accelerator_reasons.get((cell.backend, cell.device))
            return f"no {cell.device.upper()} visible to {cell.backend} on this machine" + (f": {why}" if why else "")
        return precision_problem(cell)


def run_cells(
    matrix: Matrix,
    cells: Iterable[Cell],
    *,
    data_path: Path,
    skip_check: SkipCheck,
    on_result: Callable[[CellResult], None],
    work_dir: Path | None = None,
    host_factory: Callable[[str, Path], WorkerHost] | None = None,
    progress: Progress | None = None,
    clock: Clock = time.monotonic,
    checkpoint_root: Path | None = None,
    cache_dir: Path | None = None,
    on_prepared: Callable[[dict[str, Any]], None] | None = None,
    wait_idle_s: float | None = None,
    weights_root: Path | None = None,
    trained_before: Mapping[str, CellResult] | None = None,
) -> list[CellResult]:
    """Run every cell, calling ``on_result`` as each finishes (so an interrupted sweep keeps what it measured).

    With ``checkpoint_root``, each cell's training saves its state there every epoch, so a resumed run continues a
    cell's training where it stopped rather than from epoch 0.

    ``cache_dir`` holds what cells share: the reference classifiers of aebench.accuracy, one per seed, trained (or
    found) before the first cell by a child that may use every CPU, so no cell's time or timeout includes them;
    ``on_prepared`` hears how long each took. By default a ``cache`` folder beside the default store.

    With ``wait_idle_s`` (``--wait-idle``), each cell first waits up to that long for its CPUs to be quiet
    (aebench.load.wait_for_idle); the wait goes into its info.

    Each model trains once (``plan_training``): its training cell saves the weights under ``weights_root`` (by default
    a scratch folder of this invocation) and the model's other thread counts load them. ``trained_before`` (a resumed
    run) gives the stored training results by quality key, whose weights are under ``weights_root`` already."""
    cells = list(cells)
    if cache_dir is None:
        from aebench.store import DEFAULT_STORE

        cache_dir = DEFAULT_STORE.parent / "cache"
    # Absolute: the path travels to worker processes in task messages.
    cache_dir = Path(cache_dir).resolve()
    progress = progress or Progress(len(cells))
    host_factory = host_factory or (lambda backend, log: WorkerHost(backend, log))
    hosts: dict[str, WorkerHost] = {}
    results: list[CellResult] = []
    with progress, tempfile.TemporaryDirectory(prefix="aebench-", dir=work_dir) as scratch_text:
        scratch = Path(scratch_text)
        try:
            reasons = {cell.index: skip_check.reason(cell) for cell in cells}
            runnable = [cell for cell in cells if reasons[cell.index] is None]
            weights = Path(weights_root).resolve() if weights_root else scratch / "weights"
            weights.mkdir(parents=True, exist_ok=True)
            shared = SharedTraining.start(runnable, trained_before, weights)
            plan = shared.plan
            needs_classifier = [cell for cell in runnable if plan.trains(cell)]
            if matrix.accuracy and needs_classifier:
                prepare_classifiers(matrix, needs_classifier, data_path, scratch, hosts, host_factory, cache_dir,
                                    progress.note, on_prepared or (lambda info: None))
            for cell in plan.order(cells):
                reason = reasons[cell.index]
                if reason is not None:
                    result = CellResult(cell=cell, status="skipped", duration_s=0.0, error=reason)
                elif (blocked := shared.blocked(cell)) is not None:
                    result = blocked
                else:
                    checkpoint = checkpoint_root / f"cell{cell.index:04d}" if checkpoint_root else None
                    waited = _wait_for_idle(cell, wait_idle_s, progress) if wait_idle_s else {}
                    result = run_one(matrix, cell, data_path, scratch, hosts, host_factory, clock, checkpoint,
                                      cache_dir, trains=plan.trains(cell),
                                      weights_path=weights_file(weights, cell))
                    if waited:
                        result = replace(result, info={**result.info, **waited})
                    result = shared.settle(result)
                results.append(result)
                on_result(result)
                progress.update(result)
        finally:
            for host in hosts.values():
                host.close()
    return results


def _wait_for_idle(cell: Cell, timeout_s: float, progress: Progress) -> dict[str, Any]:
    from aebench import load, machine

    return load.wait_for_idle(machine.cell_cpus(cell.threads), timeout_s, progress.note)


def host_for(hosts: dict[str, WorkerHost], backend: str, host_factory: Callable[[str, Path], WorkerHost],
             log_path: Path) -> WorkerHost:
    """The backend's running host, or a new one logging to ``log_path`` (in place of one that has exited)."""
    host = hosts.get(backend)
    if host is not None and not host.alive:
        drop_host(hosts, backend)
        host = None
    if host is None:
        host = hosts[backend] = host_factory(backend, log_path)
    return host


def drop_host(hosts: dict[str, WorkerHost], backend: str) -> str:
    """Stop the backend's host after it died or stopped answering, so the next task starts a new one, and return
    the tail of its log. One that stopped answering may still fork the task: it and its child go, not run beside the
    next."""
    dead = hosts.pop(backend, None)
    if dead is None:
        return ""
    dead.close()
    return tail(dead.log_path)


def prepare_classifiers(matrix: Matrix, cells: list[Cell], data_path: Path, scratch: Path, hosts: dict[str, WorkerHost],
                        host_factory: Callable[[str, Path], WorkerHost], cache_dir: Path, note: Callable[[str], None],
                        on_prepared: Callable[[dict[str, Any]], None]) -> None:
    """Train or load each seed's reference classifier ahead of the sweep. A failure here is only reported: the
    cells then try themselves and record the error where it belongs, in their own rows."""
    backend = cells[0].backend
    for seed in sorted({cell.seed for cell in cells}):
        task = {"kind": "classifier", "dataset": matrix.dataset, "data_path": str(data_path), "seed": seed,
                "cache_dir": str(cache_dir), "result_path": str(scratch / f"classifier-{seed}.json"),
                "log_path": str(scratch / f"classifier-{seed}.log")}
        try:
            host = host_for(hosts, backend, host_factory, scratch / f"host-{backend}.log")
            exit_code, timed_out = host.run(task, matrix.timeout_s)
        except HostDied as error:
            drop_host(hosts, backend)
            note(f"reference classifier (seed {seed}) not prepared: {error}")
            continue
        result_path = Path(task["result_path"])
        if exit_code != 0 or timed_out or not result_path.exists():
            why = _last_error_line(tail(Path(task["log_path"]))) or ("timed out" if timed_out else f"exit {exit_code}")
            note(f"reference classifier (seed {seed}) not prepared: {why}")
            continue
        info = json.loads(result_path.read_text(encoding="utf-8"))
        how = "loaded from the cache" if info["cached"] else "trained"
        note(f"reference classifier (seed {seed}) {how} in {info['seconds']:.1f} s, "
                      f"clean test accuracy {info['test_accuracy']:.4f}")
        on_prepared(info)


def run_one(matrix: Matrix, cell: Cell, data_path: Path, scratch: Path, hosts: dict[str, WorkerHost],
             host_factory: Callable[[str, Path], WorkerHost], clock: Clock, checkpoint_dir: Path | None,
             cache_dir: Path | None = None, check_metrics: bool = True, trains: bool = True,
             weights_path: Path | None = None) -> CellResult:
    """Run one cell on its backend's host and turn what the child left into a result. ``check_metrics=False`` keeps
    metrics this aebench's registry lacks: aebench ab runs other revisions' workers, which may define new ones.

    A cell that ``trains`` saves its weights to ``weights_path`` (when given); one that does not loads them from
    there and only times the model."""
    cell_dir = scratch / f"cell{cell.index:04d}"
    cell_dir.mkdir()
    task = {
        "kind": "cell",
        "matrix": matrix.to_task(),
        "cell": cell.to_dict(),
        "dataset": matrix.dataset,
        "data_path": str(data_path),
        "result_path": str(cell_dir / "result.json"),
        "artifacts_path": str(cell_dir / "artifacts.npz"),
        "log_path": str(cell_dir / "worker.log"),
        "checkpoint_dir": str(checkpoint_dir) if checkpoint_dir else None,
        "cache_dir": str(cache_dir) if cache_dir else None,
        "trains": trains,
        "weights_path": str(weights_path) if weights_path else None,
    }
    started = clock()
    log_path = scratch / f"host-{cell.backend}.log"  # where a host started for this cell logs
    try:
        host = host_for(hosts, cell.backend, host_factory, log_path)
        started = clock()  # the cell's time, without a host's start (its framework import) before it
        exit_code, timed_out = host.run(task, matrix.timeout_s)
    except HostDied as error:
        # The tail of the log of the host that died: it may have been started for an earlier cell, elsewhere, or
        # (one that died while starting) logged where its factory chose, which the error says.
        log_tail = drop_host(hosts, cell.backend) or tail(error.log_path or log_path)
        return CellResult(cell=cell, status="failed", duration_s=clock() - started, error=str(error), stderr_tail=log_tail)
    duration = clock() - started
    stderr_tail = tail(Path(task["log_path"]))
    if timed_out:
        return CellResult(cell=cell, status="timeout", duration_s=duration, exit_code=exit_code,
                          error=f"killed after the {matrix.timeout_s:g} s timeout", stderr_tail=stderr_tail)
    result_path = Path(task["result_path"])
    if exit_code != 0 or not result_path.exists():
        why = _last_error_line(stderr_tail) or "no result written"
        if exit_code is not None and exit_code < 0:
            why = f"killed by signal {-exit_code}: {why}"
        return CellResult(cell=cell, status="failed", duration_s=duration, exit_code=exit_code,
                          error=why, stderr_tail=stderr_tail)
    try:
        payload = json.loads(result_path.read_text(encoding="utf-8"))
        if check_metrics:
            REGISTRY.check_known(payload["metrics"])
        artifacts: dict[str, np.ndarray] = {}
        if Path(task["artifacts_path"]).exists():
            with np.load(task["artifacts_path"], allow_pickle=False) as archive:
                artifacts = {name: archive[name] for name in archive.files}
        return CellResult(cell=cell, status="ok", duration_s=duration, metrics=payload["metrics"],
                          info=payload["info"], exit_code=0, stderr_tail=stderr_tail, artifacts=artifacts)
    except (KeyError, TypeError, ValueError) as error:
        # An undocumented column or a malformed result (an older or newer revision's worker, under aebench ab) is a
        # defect of the worker: fail the cell visibly and let the sweep go on.
        why = str(error) if isinstance(error, ValueError) else f"unusable result: {type(error).__name__}: {error}"
        return CellResult(cell=cell, status="failed", duration_s=duration, exit_code=exit_code, error=why,
                          stderr_tail=stderr_tail)


def probe_backends(backends: Iterable[str], scratch: Path,
                   host_factory: Callable[[str, Path], WorkerHost] | None = None) -> dict[str, dict[str, Any]]:
    """Ask each backend, in a child of its own worker host, which GPUs and TPUs it sees.

    Returns backend -> aebench.worker.probe_devices' answer, or ``{"problem": why}`` when the backend's host cannot
    start or its probe fails. aebench.devices turns these into device rows and skip reasons.
    """
    host_factory = host_factory or (lambda backend, log: WorkerHost(backend, log))
    found: dict[str, dict[str, Any]] = {}
    for backend in backends:
        log = scratch / f"probe-{backend}.log"
        try:
            host = host_factory(backend, log)
        except HostDied as error:
            why = _last_error_line(tail(error.log_path or log)) or "see the log"
            found[backend] = {"problem": f"backend {backend} cannot start here: {why}"}
            continue
        try:
            result_path = scratch / f"probe-{backend}.json"
            code, _ = host.run({"kind": "probe", "result_path": str(result_path), "log_path": str(log) + ".child"}, 120)
            if code == 0 and result_path.exists():
                found[backend] = json.loads(result_path.read_text())
            else:
                why = _last_error_line(tail(Path(str(log) + ".child"))) or f"exit {code}"
                found[backend] = {"problem": f"backend {backend} device probe failed: {why}"}
        finally:
            host.close()
    return found
