"""One benchmark per machine: a machine-wide OS file lock that every timing command (``run``, ``ab``, ``crosscheck``)
holds while it measures.

Two benchmarks on one machine time each other: both stores would hold speed figures taken under contention and
nothing would say so. The lock is ``machine.lock`` in the user's cache directory (``$AEBENCH_CACHE``, see
:func:`aebench.revisions.user_cache_dir`), taken with ``flock``, so the kernel releases it when its holder dies, however
it dies. The file names its holder (pid, host, run id, command, start time) for the message a second command prints:
that command exits 2 without writing anything, unless ``--allow-concurrent`` is given, in which case it runs and marks
every cell's speed figures contaminated (``speed.contaminated = 1``, the reason in ``info.contaminated``).

A holder that exits normally clears the file. A file that still names a holder when the lock is free was left by one
that died (SIGKILL, the OOM killer, a power cut): the new holder takes it over and says so.

A run let in by ``--allow-concurrent`` holds ``concurrent.lock`` shared while it runs, so that it stays visible after
the holder it ran beside has gone: a later command finds the machine lock free but the machine still busy, and is
refused (or, with ``--allow-concurrent``, marked) in the same way.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

from aebench.errors import UserError
from aebench.load import CONTAMINATED
from aebench.results import CellResult
from aebench.store import utc_now

LOCK_FILE = "machine.lock"
CONCURRENT_FILE = "concurrent.lock"  # held shared by every --allow-concurrent run while it runs


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) the machine, as written in the lock file."""

    pid: int
    host: str
    command: str
    started_at: str
    run_id: str | None = None

    def describe(self) -> str:
        run = f", run {self.run_id}" if self.run_id else ""
        return f"pid {self.pid}{run}, started {self.started_at}"

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        """The holder a lock file names, or None when it is empty or unreadable (cleared, or mid-write)."""
        try:
            fields = json.loads(text)
            return cls(pid=int(fields["pid"]), host=str(fields["host"]), command=str(fields["command"]),
                       started_at=str(fields["started_at"]), run_id=fields.get("run_id"))
        except (ValueError, TypeError, KeyError):
            return None


def _who(holder: Holder | None, beside_concurrent: bool) -> str:
    """Who else holds the machine, as a message says it."""
    if holder is not None:
        return f"another aebench run ({holder.describe()})"
    return "another aebench run started with --allow-concurrent" if beside_concurrent else "another aebench process"


class MachineBusy(UserError):
    def __init__(self, holder: Holder | None, beside: bool = False) -> None:
        who = _who(holder, beside)
        super().__init__(f"{who} holds this machine: speed figures would be contaminated; wait for it or pass "
                         "--allow-concurrent")


@dataclass
class MachineLock:
    """The lock as this process has it: ``exclusive`` when it holds the machine alone; otherwise it runs beside
    ``other`` (``--allow-concurrent``) and its speed figures are contaminated, for the reason ``contamination``."""

    path: Path
    exclusive: bool
    other: Holder | None = None
    _file: IO[str] | None = None
    _holder: Holder | None = None
    beside_concurrent: bool = False  # the run it is beside was itself let in by --allow-concurrent

    @classmethod
    def held_by_nodes(cls) -> MachineLock:
        """A cluster run's driver: it times nothing itself, and each node's cells hold that node's lock."""
        return cls(Path(os.devnull), exclusive=True)

    @property
    def contamination(self) -> str | None:
        if self.exclusive:
            return None
        return f"--allow-concurrent: {_who(self.other, self.beside_concurrent)} held this machine"

    def mark(self, result: CellResult) -> CellResult:
        """The result as stored: unchanged when this process held the machine alone, else marked contaminated."""
        return result if self.exclusive else mark_contaminated(result, str(self.contamination))

    def name_run(self, run_id: str) -> None:
        """Put the run id in the holder's record once the run has one (it is created after the lock is taken, so that
        a refused command writes nothing)."""
        if self.exclusive and self._holder is not None:
            self._holder = Holder(**{**self._holder.__dict__, "run_id": run_id})
            _write_holder(self._file, self._holder)


def mark_contaminated(result: CellResult, reason: str) -> CellResult:
    """``result`` with its speed figures marked contaminated (``speed.contaminated = 1``) and ``reason`` joined to any
    reason ``info.contaminated`` already gives (a load check's, say)."""
    reasons = [str(known) for known in (result.info.get("contaminated"), reason) if known]
    return replace(result, metrics={**result.metrics, CONTAMINATED: 1.0},
                   info={**result.info, "contaminated": "; ".join(reasons)})


def _write_holder(file: IO[str] | None, holder: Holder) -> None:
    if file is None:
        return
    file.seek(0)
    file.truncate()
    file.write(json.dumps(holder.__dict__))
    file.flush()
    os.fsync(file.fileno())


def _flock(file: IO[str], operation: int) -> None:
    """``flock``; a filesystem without locks (ENOLCK, EOPNOTSUPP: NFS, FUSE) is bad input, said in one line.
    BlockingIOError (held by another, with LOCK_NB) passes through."""
    try:
        fcntl.flock(file.fileno(), operation)
    except BlockingIOError:
        raise
    except OSError as error:
        raise UserError(f"the machine lock {file.name} cannot be taken ({error.strerror or error}): allowed a cache "
                        "folder on a local filesystem (set AEBENCH_CACHE)") from None


@contextmanager
def hold(command: str, *, allow_concurrent: bool = False, wait: bool = False, directory: Path | None = None,
         note: Callable[[str], None] = lambda text: print(f"aebench: {text}", file=sys.stderr)) -> Iterator[MachineLock]:
    """Hold the machine for ``command`` (``run``, ``ab``, ...) while the block runs.

    Raises :class:`MachineBusy` (exit status 2) when another process holds it, unless ``allow_concurrent``: then the
    block runs anyway with a lock that is not exclusive and names the other holder. With ``wait`` it waits for the
    holder to finish instead: a cluster's cell waits its turn on its node (aebench.cluster)."""
    from aebench.revisions import user_cache_dir

    folder = directory if directory is not None else user_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        file = open(folder / LOCK_FILE, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the block
        beside = open(folder / CONCURRENT_FILE, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the block
    except OSError as error:
        raise UserError(f"the machine lock {error.filename or folder / LOCK_FILE} cannot be opened "
                        f"({error.strerror}): allowed a writable cache folder (set AEBENCH_CACHE)") from error
    try:
        if allow_concurrent:  # announced before looking: an exclusive taker that comes meanwhile sees this run
            _flock(beside, fcntl.LOCK_SH)
        file.seek(0)
        try:
            _flock(file, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            busy = True
        else:
            busy = False
        beside_concurrent = False  # the lock is free, but a run let in by --allow-concurrent is still running
        if not busy:
            if allow_concurrent:
                _flock(beside, fcntl.LOCK_UN)  # alone after all, unless a concurrent run is found
            try:
                _flock(beside, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
                _flock(beside, fcntl.LOCK_UN)
            except BlockingIOError:
                _flock(file, fcntl.LOCK_UN)
                beside_concurrent = True
                if allow_concurrent:
                    _flock(beside, fcntl.LOCK_SH)
        if busy or beside_concurrent:
            other = Holder.parse(file.read()) if busy else None
            if not allow_concurrent:
                raise MachineBusy(other, beside=beside_concurrent) from None
            lock = MachineLock(folder / LOCK_FILE, exclusive=False, other=other, beside_concurrent=beside_concurrent)
            note(f"warning: {lock.contamination}; every cell's speed figures are marked contaminated")
            yield lock
            return
        stale = Holder.parse(file.read())
        if stale is not None:
            note(f"took over the machine lock of another aebench run ({stale.describe()}) whose process is gone")
        holder = Holder(pid=os.getpid(), host=socket.gethostname(), command=command, started_at=utc_now())
        _write_holder(file, holder)
        lock = MachineLock(folder / LOCK_FILE, exclusive=True, _file=file, _holder=holder)
        try:
            yield lock
        finally:
            file.seek(0)
            file.truncate()  # cleared: a file still naming a holder means that holder died
            file.flush()
            fcntl.flock(file.fileno(), fcntl.LOCK_UN)
    finally:
        file.close()
        beside.close()


@contextmanager
def claim_cores(count: int, directory: Path | None = None, poll_s: float = 0.2) -> Iterator[list[int]]:
    """``count`` of this machine's usable CPUs that no other packed cell holds (``aebench run --cluster --pack``),
    each held by a lock file ``cpuN.lock`` beside the machine lock; waits for them. The machine lock is held shared
    meanwhile: packed cells run side by side, and an exclusive benchmark neither starts nor is waited past."""
    from aebench import machine
    from aebench.revisions import user_cache_dir

    folder = directory if directory is not None else user_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_FILE, "a+", encoding="utf-8") as machine_lock:
        fcntl.flock(machine_lock.fileno(), fcntl.LOCK_SH)
        held: list[tuple[int, IO[str]]] = []
        try:
            while len(held) < count:
                for cpu in machine.usable_cpus():
                    if len(held) == count:
                        break
                    handle = open(folder / f"cpu{cpu}.lock", "a+", encoding="utf-8")  # noqa: SIM115 - held
                    try:
                        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        handle.close()
                    else:
                        held.append((cpu, handle))
                if len(held) < count:  # not enough free: give them back, so two cells never hold half each
                    for _, handle in held:
                        handle.close()
                    held.clear()
                    time.sleep(poll_s)
            yield [cpu for cpu, _ in held]
        finally:
            for _, handle in held:
                handle.close()
