"""Load checks: was anything else using the machine while a cell measured?

pyperf checks the machine before it times (``system show``); aebench measures it before and during every timed
phase of every cell, from the kernel's own accounting:

- **other processes on the cell's CPUs**: the busy time of the CPUs the cell is pinned to (``/proc/stat``, through
  psutil) minus the cell's own CPU time (``getrusage`` of the cell and of its finished child processes, such as the
  ``ptxas`` compiles XLA runs for a JAX cell on a GPU), as a share of those CPUs' time;
- **steal**: time the hypervisor gave the cell's virtual CPUs to another guest;
- **memory pressure**: the share of the time some task stalled waiting for memory (Linux PSI,
  ``/proc/pressure/memory``; absent on kernels without it).

The windows are the cell's setup before training (data, model build: its own work is subtracted), the training
epochs, and the inference phase (cold start, SingleStream, Offline, the framework path). A window past a limit in
``LIMITS`` makes the cell's speed figures contaminated (``speed.contaminated = 1``, the reason in
``info.contaminated``): ``compare``, ``hardware`` and ``history`` leave them out, ``ab`` drops that round's figures
of the cell, and the report marks them. The worst window's figures are stored as ``speed.load_*_pct``.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

# Past these, a window's speed figures are not this machine's alone. The kernel counts CPU time in 10 ms ticks, so
# over the shortest window (about half a second on one CPU) a share is good to a few percent: 10% is well above that
# and well below what a competing busy process takes (half of a shared core, or all of another).
LIMITS = {"other_cpu_pct": 10.0, "steal_pct": 5.0, "memory_pressure_pct": 10.0}
LABELS = {"other_cpu_pct": "other processes used {:.0f}% of the cell's CPUs",
          "steal_pct": "the hypervisor stole {:.0f}% of the cell's CPU time",
          "memory_pressure_pct": "tasks stalled on memory {:.0f}% of the time"}
MIN_WINDOW_S = 0.2  # a shorter window is merged into the next: a few ticks say nothing
PSI_MEMORY = Path("/proc/pressure/memory")
PROC_STAT = Path("/proc/stat")
CONTAMINATED = "speed.contaminated"  # the flag this module sets; the metric registry says what it means


@dataclass(frozen=True)
class Snapshot:
    """The counters at one moment: wall clock, the pinned CPUs' busy and stolen seconds, this process's CPU
    seconds, and the memory-stall microseconds (None without PSI)."""

    wall_s: float
    busy_s: float
    steal_s: float
    own_s: float
    memory_stall_us: float | None


def snapshot(cpus: Sequence[int], clock: Callable[[], float] = time.monotonic) -> Snapshot:
    per_cpu = cpu_seconds()
    chosen = [per_cpu[cpu] for cpu in cpus if cpu in per_cpu]
    # A cell's child processes do its work: XLA compiles a JAX cell's GPU kernels in ptxas subprocesses, which
    # counted as "other processes" on the H200 (6-19% of the CPUs while JAX cells trained, 0.1-0.3% for torch's).
    # RUSAGE_CHILDREN holds the children that finished and were waited for.
    own = sum(usage.ru_utime + usage.ru_stime
              for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)))
    return Snapshot(clock(), sum(busy for busy, _ in chosen), sum(steal for _, steal in chosen), own,
                    _memory_stall_us())


def cpu_seconds(stat: Path = PROC_STAT) -> dict[int, tuple[float, float]]:
    """CPU id -> (busy, stolen) seconds since boot, from ``/proc/stat``'s ``cpuN`` lines, by id (an offline CPU has
    no line, so a list index would name the wrong one). Busy is user + nice + system + irq + softirq. Without
    /proc/stat (not Linux), psutil's per-CPU times, indexed as it lists them."""
    tick = os.sysconf("SC_CLK_TCK")
    try:
        lines = stat.read_text().splitlines()
    except OSError:
        return {index: (t.user + t.nice + t.system, getattr(t, "steal", 0.0))
                for index, t in enumerate(psutil.cpu_times(percpu=True))}
    found = {}
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            user, nice, system, _idle, _iowait, irq, softirq, steal = (float(f) for f in (fields + ["0"] * 8)[:8])
            found[int(name[3:])] = ((user + nice + system + irq + softirq) / tick, steal / tick)
    return found


def _memory_stall_us() -> float | None:
    """PSI's cumulative 'some' memory stall, in microseconds."""
    try:
        first = PSI_MEMORY.read_text().splitlines()[0]  # "some avg10=0.00 avg60=0.00 avg300=0.00 total=123"
        return float(first.rsplit("total=", 1)[1])
    except (OSError, IndexError, ValueError):
        return None


@dataclass(frozen=True)
class Window:
    """The load over one phase of a cell, in percent of the cell's CPUs' time (of the wall time for memory)."""

    phase: str
    seconds: float
    other_cpu_pct: float
    steal_pct: float
    memory_pressure_pct: float | None

    @classmethod
    def between(cls, phase: str, start: Snapshot, end: Snapshot, cpus: int) -> Window:
        seconds = max(end.wall_s - start.wall_s, 1e-9)
        capacity = seconds * max(cpus, 1)
        other = max(0.0, (end.busy_s - start.busy_s) - (end.own_s - start.own_s))
        memory = (None if start.memory_stall_us is None or end.memory_stall_us is None
                  else 100 * (end.memory_stall_us - start.memory_stall_us) / 1e6 / seconds)
        return cls(phase, seconds, 100 * other / capacity, 100 * (end.steal_s - start.steal_s) / capacity, memory)

    def breaches(self) -> list[str]:
        """Each limit this window passed, said in words."""
        found = []
        for key, limit in LIMITS.items():
            value = getattr(self, key)
            if value is not None and value > limit:
                found.append(f"{LABELS[key].format(value)} during {self.phase} (limit {limit:g}%)")
        return found


class LoadMonitor:
    """Windows of load over a cell's phases: ``mark(phase)`` closes the window that ends now and names it."""

    def __init__(self, cpus: Sequence[int], clock: Callable[[], float] = time.monotonic,
                 take: Callable[[Sequence[int], Callable[[], float]], Snapshot] = snapshot) -> None:
        self.cpus = list(cpus)
        self._clock, self._take = clock, take
        self._last = take(self.cpus, clock)
        self.windows: list[Window] = []

    def mark(self, phase: str, last: bool = False) -> None:
        """Close the window that ends now. One shorter than MIN_WINDOW_S carries over into the next, unless it is the
        ``last``: then it is judged as it is, rather than not at all."""
        now = self._take(self.cpus, self._clock)
        if now.wall_s - self._last.wall_s < MIN_WINDOW_S and not last:
            return  # too short to say anything: the next window starts where this one did
        self.windows.append(Window.between(phase, self._last, now, len(self.cpus)))
        self._last = now

    def reason(self) -> str | None:
        """Why the cell's speed figures are contaminated, or None when every window stayed within the limits."""
        breaches = [text for window in self.windows for text in window.breaches()]
        return "; ".join(breaches) if breaches else None

    def metrics(self) -> dict[str, float | None]:
        """The worst window's figures and the contamination flag."""
        def worst(key: str) -> float | None:
            values = [getattr(w, key) for w in self.windows if getattr(w, key) is not None]
            return max(values) if values else None

        return {"speed.load_other_cpu_pct": worst("other_cpu_pct"), "speed.load_steal_pct": worst("steal_pct"),
                "speed.load_memory_pressure_pct": worst("memory_pressure_pct"),
                CONTAMINATED: 1.0 if self.reason() else 0.0}


def busy_pct(cpus: Sequence[int], seconds: float = 0.5) -> float:
    """How busy these CPUs are over the next ``seconds``, in percent of their time (the caller itself idle)."""
    start = snapshot(cpus)
    time.sleep(seconds)
    return Window.between("a wait", start, snapshot(cpus), len(cpus)).other_cpu_pct


def wait_for_idle(cpus: Sequence[int], timeout_s: float, note: Callable[[str], None],
                  sample: Callable[[Sequence[int]], float] | None = None,
                  clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """``--wait-idle``: before a cell, wait until its CPUs are quiet (other load within the limit) or ``timeout_s``
    has passed. Returns what the wait was, for the cell's info."""
    sample = sample or busy_pct
    started = clock()
    load = sample(cpus)
    while load > LIMITS["other_cpu_pct"] and clock() - started < timeout_s:
        load = sample(cpus)
    waited = clock() - started
    if load > LIMITS["other_cpu_pct"]:
        note(f"warning: CPUs {','.join(map(str, cpus))} still {load:.0f}% busy after waiting {waited:.0f} s: "
             "the cell runs, and its load checks will say whether its figures are clean")
    return {"waited_idle_s": round(waited, 1), "load_before_pct": round(load, 1)}
