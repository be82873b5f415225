"""Cells across a Dask cluster: ``aebench run ... --cluster ADDRESS``.

Dask distributed is the engine; aebench writes no scheduler. Each cell is one Dask task. On the worker node it runs
as it does locally: in a worker host of its backend (aebench.runner.WorkerHost), forked, pinned and under its
timeout. What it measured (figures, arrays, a training cell's weights) comes back to the driver, which writes the
store; the cell's own ``info.machine_id`` says which node timed it.

- **Exclusive by default.** A cell holds its node's machine lock (aebench.machinelock) while it runs, waiting for it
  if another cell or another ``aebench run`` has it: speed figures never share a node. With ``--pack`` CPU cells
  share the node on disjoint cores instead (each core a lock file of its own), and say so in ``info.packed``; their
  speed figures are marked contaminated, as ``--allow-concurrent`` marks a shared machine's.
- **Placement.** A GPU (TPU) cell needs a worker that advertises a ``GPU`` (``TPU``) resource; a cell of N threads a
  worker whose node lets aebench use N CPUs. A cell that no worker can take is skipped with the reason.
- **Train once.** A model's training cell runs first; its weights travel back with its result and out again with its
  other thread counts, and are kept beside the run's checkpoints so that ``--resume`` finds them.
- **Lost workers.** A cell whose worker dies mid-cell is tried once more on another worker, then stored as failed
  with the reason. The scheduler of ``local:N`` hands that decision to aebench (``allowed-failures`` 0); a scheduler
  started by hand should be too (README).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aebench import atomic, machine, machinelock
from aebench.config import Cell, Matrix
from aebench.devices import ACCELERATORS  # a cell on one needs a worker advertising its name, upper case
from aebench.errors import UserError
from aebench.results import CellResult
from aebench.runner import (HostDied, Progress, SharedTraining, WorkerHost, precision_problem, prepare_classifiers,
                            run_one, weights_file)

LOCAL_PREFIX = "local:"
CONNECT_TIMEOUT_S = 30.0
WORKERS_TIMEOUT_S = 120.0  # a cluster started by hand may have no worker yet: wait this long for the first
LOST_WORKER_RETRIES = 1
# How often the driver, waiting, checks that each queued cell still has a worker it may run on: Dask keeps a task
# whose allowed workers have all left waiting forever.
STRANDED_CHECK_S = 30.0


def parse_address(text: str) -> tuple[str, int | None]:
    """``local:N`` -> ("local", N); ``tcp://host:port`` (or tls://) -> (text, None). Anything else is a UserError."""
    if text.startswith(LOCAL_PREFIX):
        count = text[len(LOCAL_PREFIX):]
        if count.isdigit() and 1 <= int(count) <= 64:
            return "local", int(count)
    elif text.split("://", 1)[0] in ("tcp", "tls") and "://" in text and ":" in text.split("://", 1)[1]:
        return text, None
    raise UserError(f"--cluster {text!r} is invalid: allowed local:N (a cluster of N workers on 127.0.0.1, N from 1 "
                    "to 64) or the scheduler's address, tcp://HOST:PORT")


@contextmanager
def connect(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> Iterator[Any]:
    """A Dask client of the cluster at ``address`` (see ``parse_address``); a ``local:N`` cluster is started here, on
    127.0.0.1 only, and stopped at the end."""
    import dask
    from distributed import Client, LocalCluster

    where, workers = parse_address(address)
    if workers is not None:
        # 0: a worker lost mid-cell fails its task at once, and aebench (not the scheduler) decides to retry it.
        with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                   dashboard_address=None, silence_logs=logging.ERROR)
        try:
            with Client(cluster) as client:
                yield client
        finally:
            cluster.close()
        return
    try:
        client = Client(where, timeout=timeout_s)
    except (OSError, TimeoutError) as error:
        raise UserError(f"--cluster {where}: no Dask scheduler answers there ({error}): allowed the address of a "
                        "running `dask scheduler`, or local:N") from None
    try:
        client.wait_for_workers(1, timeout=WORKERS_TIMEOUT_S)
    except TimeoutError:
        client.close()
        raise UserError(f"--cluster {where}: the scheduler has no worker after {WORKERS_TIMEOUT_S:g} s: start one "
                        f"with `dask worker {where} --nthreads 1`") from None
    try:
        yield client
    finally:
        client.close()


# -- what the cluster offers -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Node:
    """One Dask worker as aebench sees it: its address, the resources it advertises and its machine."""

    address: str
    resources: Mapping[str, float]
    host: str
    usable_cpus: int
    machine_id: str


def node_facts() -> dict[str, Any]:
    """Run on each worker: the machine it is on."""
    return {"host": socket.gethostname(), "usable_cpus": len(machine.usable_cpus()),
            "machine_id": machine.fingerprint()["machine_id"]}


def survey(client: Any) -> tuple[Node, ...]:
    """Every worker of the cluster with its resources and machine."""
    workers = client.scheduler_info(n_workers=-1)["workers"]
    facts = client.run(node_facts, on_error="return")  # a worker dying meanwhile is one fewer, not an error
    return tuple(Node(address, dict(workers[address].get("resources") or {}), found["host"], found["usable_cpus"],
                      found["machine_id"]) for address, found in sorted(facts.items())
                 if address in workers and isinstance(found, dict))


@dataclass(frozen=True)
class Placement:
    """Which workers may run a cell; the reason when none may (the cell is then skipped)."""

    nodes: tuple[Node, ...]

    def workers(self, cell: Cell) -> list[str]:
        resource = cell.device.upper() if cell.device in ACCELERATORS else None
        return [node.address for node in self.nodes
                if (resource is None or node.resources.get(resource, 0) >= 1)
                and (cell.threads is None or node.usable_cpus >= cell.threads)]

    def resources(self, cell: Cell) -> dict[str, int] | None:
        return {cell.device.upper(): 1} if cell.device in ACCELERATORS else None

    def reason(self, cell: Cell) -> str | None:
        if (problem := precision_problem(cell)) is not None:
            return problem
        if self.workers(cell):
            return None
        if not self.nodes:
            return "the cluster has no worker left"
        if cell.device in ACCELERATORS:
            name = cell.device.upper()
            if not any(node.resources.get(name, 0) >= 1 for node in self.nodes):
                return (f"no worker of the cluster advertises a {name} resource: start one on a {name} machine with "
                        f"`dask worker SCHEDULER --resources {name}=1`")
        largest = max(node.usable_cpus for node in self.nodes)
        return f"threads={cell.threads} needs {cell.threads} CPUs; the largest worker of the cluster lets aebench use {largest}"


# -- on the node -------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class NodeTask:
    """What one cell's task carries to its node (Dask pickles it)."""

    matrix: Matrix
    cell: Cell
    data_path: Path
    cache_dir: Path
    trains: bool
    weights: bytes | None = None
    pack: bool = False
    host_command: tuple[str, ...] | None = None  # tests: a stand-in worker host
    sweep: str = ""  # the driver's sweep: what stop_sweep names to kill its cells


@dataclass(frozen=True)
class NodeReply:
    """What comes back: the result, the trained weights, and notes for the driver's log."""

    result: CellResult
    weights: bytes | None = None
    notes: tuple[str, ...] = ()
    prepared: tuple[Mapping[str, Any], ...] = ()  # the reference classifier this cell's node trained or loaded first


_HOSTS: dict[tuple[Any, ...], dict[str, WorkerHost]] = {}  # this worker process's hosts, per task thread
_HOSTS_LOCK = threading.Lock()
_RUNNING: dict[str, set[int]] = {}  # sweep -> the task threads running one of its cells on this worker
_STOPPED: set[str] = set()  # sweeps whose driver has stopped: their cells start nothing more on this worker


@contextmanager
def _running(sweep: str) -> Iterator[None]:
    thread = threading.get_ident()
    with _HOSTS_LOCK:
        _RUNNING.setdefault(sweep, set()).add(thread)
    try:
        yield
    finally:
        with _HOSTS_LOCK:
            _RUNNING[sweep].discard(thread)
            if not _RUNNING[sweep]:
                del _RUNNING[sweep]


def stop_sweep(sweep: str) -> int:
    """Run on every worker when a driver stops (Ctrl-C, SIGTERM, an error): kill the cells of its sweep still
    running there, and their hosts. Dask cannot cancel a task that has started; without this the cell would go on
    timing, unsupervised, on its node and hold the node's machine lock. The task then ends as a failed cell that
    nobody collects. Returns how many hosts it killed."""
    with _HOSTS_LOCK:
        _STOPPED.add(sweep)  # a cell of it waiting for the machine lock, or between hosts, then runs nothing
        threads = _RUNNING.get(sweep, set())
        doomed = []
        for (thread, _), hosts in _HOSTS.items():
            if thread in threads:
                doomed += hosts.values()
                hosts.clear()  # the next cell of that thread starts afresh
    for host in doomed:
        host.kill()
    return len(doomed)


def _host_logs() -> Path:
    """Where this task thread's hosts log: a folder that outlives each cell's scratch, as the hosts do, so that a host
    that dies under a later cell still has the log its stderr tail comes from."""
    folder = Path(tempfile.gettempdir()) / f"aebench-node-{os.getpid()}-{threading.get_ident()}"
    folder.mkdir(exist_ok=True)
    return folder


def _hosts_of_this_thread(command: tuple[str, ...] | None) -> dict[str, WorkerHost]:
    # A worker host runs one cell at a time: each of the Dask worker's threads has hosts of its own.
    with _HOSTS_LOCK:
        return _HOSTS.setdefault((threading.get_ident(), command), {})


def run_on_node(task: NodeTask) -> NodeReply:
    """The Dask task of one cell, on the worker node."""
    from aebench import data

    data_path = task.data_path
    if not data_path.is_file():  # another machine: its own AEBENCH_DATA or Keras cache
        data_path = data.find_dataset(task.matrix.dataset, download=None)
    cache_dir = task.cache_dir
    if not cache_dir.parent.is_dir():
        from aebench.revisions import user_cache_dir

        cache_dir = user_cache_dir() / "classifiers"
    hosts = _hosts_of_this_thread(task.host_command)
    with _running(task.sweep):
        return _run_cell_on_node(task, data_path, cache_dir, hosts)


def _run_cell_on_node(task: NodeTask, data_path: Path, cache_dir: Path, hosts: dict[str, WorkerHost]) -> NodeReply:
    matrix, cell = task.matrix, task.cell
    notes: list[str] = []
    prepared: list[Mapping[str, Any]] = []

    def host_factory(backend: str, log: Path) -> WorkerHost:
        if task.sweep in _STOPPED:
            raise HostDied("not run: its driver stopped the sweep")
        return WorkerHost(backend, _host_logs() / log.name,
                          command=list(task.host_command) if task.host_command else None)

    waited_from = time.monotonic()
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="aebench-node-") as scratch_text:
        scratch = Path(scratch_text)
        info: dict[str, Any] = {"cluster_worker": _worker_address(), "cluster_host": socket.gethostname()}
        if task.pack and cell.device == "cpu":
            affinity = stack.enter_context(machinelock.claim_cores(cell.threads or 1))
            info["packed"] = f"--pack: shared its node with other cells, on CPUs {','.join(map(str, affinity))}"
        else:
            stack.enter_context(machinelock.hold("cluster cell", wait=True, note=notes.append))
            affinity = machine.usable_cpus()
        for host in hosts.values():  # an earlier cell may have left them on a packed cell's cores
            if host.alive:  # one that has exited is replaced when next needed (runner.host_for)
                host.set_affinity(affinity)
        info["cluster_wait_s"] = round(time.monotonic() - waited_from, 3)
        weights = weights_file(scratch / "weights", cell)
        weights.parent.mkdir()
        if task.weights is not None:
            weights.write_bytes(task.weights)
        if task.trains and matrix.accuracy:
            prepare_classifiers(matrix, [cell], data_path, scratch, hosts, _pinned(host_factory, affinity), cache_dir,
                                notes.append, prepared.append)
        result = run_one(matrix, cell, data_path, scratch, hosts, _pinned(host_factory, affinity), time.monotonic,
                         None, cache_dir, trains=task.trains, weights_path=weights)
        trained = weights.read_bytes() if task.trains and result.status == "ok" and weights.exists() else None
    result = replace(result, info={**result.info, **info})
    if "packed" in info and result.status == "ok":
        # Beside other cells, its speed figures shared memory bandwidth and caches: what --allow-concurrent marks,
        # and what compare, hardware, history and ab must not mix with a node's exclusive figures. Quality stands.
        result = machinelock.mark_contaminated(result, info["packed"])
    return NodeReply(result, trained, tuple(notes), tuple(prepared))


def _pinned(factory: Callable[[str, Path], WorkerHost], cpus: Iterable[int]) -> Callable[[str, Path], WorkerHost]:
    cpus = list(cpus)

    def start(backend: str, log: Path) -> WorkerHost:
        host = factory(backend, log)
        host.set_affinity(cpus)
        return host

    return start


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except ValueError:  # not in a Dask worker (a test calling run_on_node directly)
        return ""


# -- on the driver -----------------------------------------------------------------------------------------------------

@dataclass
class _Attempt:
    cell: Cell
    trains: bool
    number: int
    earlier: str | None = None  # why the try before this one failed
    workers: tuple[str, ...] = ()  # the workers it may run on


@dataclass
class ClusterSweep:
    """The driver's side of a cluster run: submits each cell when it may run, collects the results as they come."""

    client: Any
    matrix: Matrix
    placement: Placement
    data_path: Path
    cache_dir: Path
    weights_root: Path
    pack: bool = False
    host_command: tuple[str, ...] | None = None
    on_prepared: Callable[[Mapping[str, Any]], None] = lambda info: None
    _attempts: dict[Any, _Attempt] = field(default_factory=dict)
    _token: str = field(default_factory=lambda: secrets.token_hex(3))
    _submitted: int = 0

    def submit(self, cell: Cell, trains: bool, number: int = 1, earlier: str | None = None) -> Any:
        weights = None if trains else weights_file(self.weights_root, cell).read_bytes()
        task = NodeTask(self.matrix, cell, self.data_path, self.cache_dir, trains, weights, self.pack, self.host_command,
                        self._token)
        workers = self.placement.workers(cell)
        # A key of its own per submission: a cancelled key's late 'cancelled-keys' message would cancel a resubmission
        # that reused it.
        self._submitted += 1
        key = f"aebench-cell{cell.index:04d}-{self._token}-try{number}-{self._submitted}"
        future = self.client.submit(run_on_node, task, key=key,
                                    pure=False, workers=workers, allow_other_workers=False,
                                    resources=self.placement.resources(cell))
        self._attempts[future] = _Attempt(cell, trains, number, earlier, tuple(workers))
        return future

    def stranded(self, pending: Iterable[Any]) -> list[tuple[Any, CellResult | None, Any | None]]:
        """The pending cells whose workers have all left the cluster, each placed again on the workers there are now
        (a new future) or, with none left that may run it, failed with the reason: (old future, result, new future).
        A cell placed again keeps its try number: it never started."""
        alive = set(self.client.scheduler_info(n_workers=-1)["workers"])  # the scheduler's word, not who answered
        lost = [f for f in pending if not f.done() and not set(self._attempts[f].workers) & alive]
        if not lost:
            return []
        self.placement = Placement(survey(self.client))
        moved = []
        for future in lost:
            attempt = self._attempts.pop(future)
            self.client.cancel([future])
            why = f"its workers ({', '.join(attempt.workers)}) left the cluster before it ran"
            if (nowhere := self.placement.reason(attempt.cell)) is not None:
                result = CellResult(cell=attempt.cell, status="failed", duration_s=0.0, error=f"{why}, and {nowhere}")
                moved.append((future, self._with_earlier(result, attempt), None))
            else:
                moved.append((future, None, self.submit(attempt.cell, attempt.trains, attempt.number, attempt.earlier)))
        return moved

    def collect(self, future: Any) -> tuple[CellResult | None, bytes | None, tuple[str, ...], Any | None]:
        """A finished future's result, the weights it trained and its notes; or, when its worker was lost and it may
        be tried again, no result and the new try's future. What its node prepared goes to ``on_prepared``."""
        from distributed import KilledWorker

        attempt = self._attempts.pop(future)
        cell = attempt.cell
        try:
            reply: NodeReply = future.result()
        except KilledWorker as lost:
            why = f"its Dask worker {getattr(lost.last_worker, 'address', '?')} was lost mid-cell (KilledWorker)"
            # The workers as they are now: a retry restricted to the lost one would wait for it forever.
            self.placement = Placement(survey(self.client))
            if (nowhere := self.placement.reason(cell)) is not None:
                result = CellResult(cell=cell, status="failed", duration_s=0.0, error=f"{why}, and {nowhere}")
                return self._with_earlier(result, attempt), None, (), None
            if attempt.number <= LOST_WORKER_RETRIES:
                retry = self.submit(cell, attempt.trains, attempt.number + 1, why)
                return None, None, (f"{cell.label}: {why}; trying it once more elsewhere",), retry
            result = CellResult(cell=cell, status="failed", duration_s=0.0,
                                error=f"{why}, on each of {attempt.number} tries: not tried again")
            return self._with_earlier(result, attempt), None, (), None
        except Exception as error:  # the task itself raised on the node (a missing dataset there, ...)
            result = CellResult(cell=cell, status="failed", duration_s=0.0,
                                error=f"the cluster task failed: {type(error).__name__}: {error}"[:500])
            return self._with_earlier(result, attempt), None, (), None
        for info in reply.prepared:
            self.on_prepared(info)
        return self._with_earlier(reply.result, attempt), reply.weights, reply.notes, None

    def cell_of(self, future: Any) -> Cell:
        return self._attempts[future].cell

    @staticmethod
    def _with_earlier(result: CellResult, attempt: _Attempt) -> CellResult:
        if attempt.earlier is None:
            return result
        return replace(result, info={**result.info, "earlier_attempt": f"try {attempt.number - 1}: {attempt.earlier}"})

    def cancel(self) -> None:
        """Stop every cell not collected: queued ones are cancelled, running ones killed on their nodes."""
        if self._attempts:
            self.client.cancel(list(self._attempts))
            self._attempts.clear()
            try:
                self.client.run(stop_sweep, self._token, on_error="ignore")
            except Exception as error:  # the scheduler gone too: nothing left to reach
                logging.getLogger(__name__).warning("could not stop the cells left on the cluster: %s", error)


def run_cells(matrix: Matrix, cells: Iterable[Cell], *, client: Any, data_path: Path,
              on_result: Callable[[CellResult], None], weights_root: Path, cache_dir: Path,
              progress: Progress | None = None, trained_before: Mapping[str, CellResult] | None = None,
              pack: bool = False, host_command: Sequence[str] | None = None,
              on_prepared: Callable[[Mapping[str, Any]], None] | None = None) -> list[CellResult]:
    """``aebench.runner.run_cells`` across a Dask cluster: every cell, ``on_result`` as each finishes.

    A training cell's node trains or loads the reference classifier first, outside the cell's time, as the local
    runner does before the sweep; ``on_prepared`` hears how long that took."""
    from distributed import wait

    cells = list(cells)
    progress = progress or Progress(len(cells))
    placement = Placement(survey(client))
    weights_root = Path(weights_root).resolve()
    weights_root.mkdir(parents=True, exist_ok=True)
    sweep = ClusterSweep(client, matrix, placement, Path(data_path).resolve(), Path(cache_dir).resolve(), weights_root,
                         pack, tuple(host_command) if host_command else None, on_prepared or (lambda info: None))
    reasons = {cell.index: placement.reason(cell) for cell in cells}
    shared = SharedTraining.start([cell for cell in cells if reasons[cell.index] is None], trained_before, weights_root)
    plan = shared.plan
    waiting: dict[str, list[Cell]] = {}  # quality key -> its timing cells, until its training cell has finished
    results: list[CellResult] = []
    running: set[Any] = set()
    machines = sorted({node.machine_id for node in placement.nodes})
    progress.note(f"cluster: {len(placement.nodes)} workers on {len(machines)} machines "
                  f"({', '.join(node.address for node in placement.nodes)}); "
                  + ("--pack: CPU cells share nodes on disjoint cores" if pack else "one cell per machine at a time"))

    def settle(result: CellResult) -> None:
        result = shared.settle(result)
        results.append(result)
        on_result(result)
        progress.update(result)
        if plan.trains(result.cell):
            for cell in waiting.pop(result.cell.quality_key, []):
                blocked = shared.blocked(cell)
                if blocked is not None:
                    settle(blocked)
                else:
                    running.add(sweep.submit(cell, trains=False))

    with progress:
        try:
            for cell in plan.order(cells):
                if reasons[cell.index] is not None:
                    settle(CellResult(cell=cell, status="skipped", duration_s=0.0, error=reasons[cell.index]))
                elif plan.trains(cell) or shared.trained(cell):
                    running.add(sweep.submit(cell, trains=plan.trains(cell)))
                else:
                    waiting.setdefault(cell.quality_key, []).append(cell)
            while running:
                try:
                    with client.as_current():  # wait() goes through the current client: make it this one
                        done = wait(running, timeout=STRANDED_CHECK_S, return_when="FIRST_COMPLETED").done
                except TimeoutError:
                    for old, result, new in sweep.stranded(running):
                        running.discard(old)
                        if new is not None:
                            progress.note(f"{sweep.cell_of(new).label}: the workers it was sent to left the cluster "
                                          "before it ran; sent to those there are now")
                            running.add(new)
                        else:
                            settle(result)
                    continue
                for future in done:
                    running.discard(future)
                    result, weights, notes, retry = sweep.collect(future)
                    for note in notes:
                        progress.note(note)
                    if result is None:
                        running.add(retry)
                        continue
                    if weights is not None:  # whole or absent: a resume trusts any weights file it finds
                        with atomic.replacing(weights_file(weights_root, result.cell)) as partial:
                            partial.write_bytes(weights)
                    settle(result)
        finally:
            sweep.cancel()
    return results
