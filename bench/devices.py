"""What this machine offers aebench: the CPU, and the GPUs and TPUs each installed Keras backend can use.

``aebench devices`` prints it; ``aebench run`` uses the same probe to skip, with a reason, the cells this machine
cannot run. The CPU facts come from aebench.machine. The GPU and TPU questions are asked in child processes, one worker
host per backend (aebench.runner.probe_backends runs aebench.worker.probe_devices), because this process never imports an
ML framework: TensorFlow lists its GPUs and resolves a TPU cluster (``TPUClusterResolver()``, which raises when no TPU
is named or attached), JAX lists ``jax.devices("gpu")`` and ``jax.devices("tpu")``, torch asks ``torch.cuda``.

The probe is a parameter (``discover(probe=...)``), so the detection logic is tested with faked device lists.
"""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
from tabulate import tabulate

from aebench import machine
from aebench.config import BACKENDS, Cell

if TYPE_CHECKING:
    from aebench.runner import SkipCheck

ACCELERATORS = ("gpu", "tpu")
# backend -> the answer of aebench.worker.probe_devices, or {"problem": why} when that backend could not be asked
ProbeResults = Mapping[str, Mapping[str, Any]]
Probe = Callable[[Sequence[str]], ProbeResults]


def backend_problems(backends: Sequence[str]) -> dict[str, str]:
    """Backends that cannot be imported here, found without importing them."""
    problems = {}
    for backend in backends:
        if importlib.util.find_spec("keras") is None:
            problems[backend] = "keras is not installed"
        elif importlib.util.find_spec(backend) is None:
            from aebench.backends import BACKENDS

            extra = BACKENDS[backend].extra
            hint = f" (pip install 'aebench[{extra}]')" if extra else ""
            problems[backend] = f"backend {backend} is not installed{hint}"
    return problems


def thread_settings(usable: int) -> list[int]:
    """Thread counts worth sweeping: 1, 2, 4, ... below the usable CPUs, then the usable count itself."""
    counts = [1]
    while counts[-1] * 2 < usable:
        counts.append(counts[-1] * 2)
    if usable > counts[-1]:
        counts.append(usable)
    return counts


@dataclass(frozen=True)
class DeviceRow:
    """One line of ``aebench devices``: a device as one backend sees it (the CPU row covers every backend)."""

    device: str  # cpu | gpu | tpu
    backend: str
    available: bool
    detail: str  # the device names when available, the reason when not
    threads: tuple[int, ...] = ()  # CPU only: the thread counts worth sweeping

    @property
    def status(self) -> str:
        return f"{'available' if self.available else 'unavailable'}: {self.detail}"


@dataclass(frozen=True)
class Accelerators:
    """The probe's answers in the shape aebench.runner.SkipCheck takes."""

    counts: dict[tuple[str, str], int] = field(default_factory=dict)  # (backend, gpu|tpu) -> devices
    names: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (backend, gpu|tpu) -> their names
    reasons: dict[tuple[str, str], str] = field(default_factory=dict)  # (backend, gpu|tpu) -> why there are none
    problems: dict[str, str] = field(default_factory=dict)  # backend -> why it cannot run at all


def summarize(found: ProbeResults) -> Accelerators:
    """Counts, names and reasons per (backend, gpu|tpu), and the backends that could not be asked at all."""
    result = Accelerators()
    for backend, answer in found.items():
        if "problem" in answer:
            result.problems[backend] = str(answer["problem"])
            continue
        for kind in ACCELERATORS:
            result.counts[(backend, kind)] = int(answer.get(kind) or 0)
            result.names[(backend, kind)] = [str(name) for name in answer.get(f"{kind}_names") or []]
            if not result.counts[(backend, kind)]:
                result.reasons[(backend, kind)] = str(answer.get(f"{kind}_reason") or f"{backend} reports no {kind}")
    return result


def probe_in_workers(backends: Sequence[str]) -> ProbeResults:
    """The real probe: one worker host per backend, each answering in a child process."""
    from aebench import runner

    with tempfile.TemporaryDirectory(prefix="aebench-probe-") as scratch:
        return runner.probe_backends(backends, Path(scratch))


def skip_check(backends: Sequence[str], cells: Sequence[Cell]) -> SkipCheck:
    """What a run can start here: the installed backends, the CPUs aebench may use and the accelerators. Only the
    backends that a GPU or TPU cell asks for are probed (each probe starts a worker host)."""
    from aebench.runner import SkipCheck

    problems = backend_problems(backends)
    wanted = sorted({c.backend for c in cells if c.device != "cpu" and c.backend not in problems})
    found = summarize(probe_in_workers(wanted) if wanted else {})
    problems.update(found.problems)
    return SkipCheck(len(machine.usable_cpus()), found.counts, problems, found.reasons)


def cpu_row() -> DeviceRow:
    usable = len(machine.usable_cpus())
    physical = psutil.cpu_count(logical=False) or 0
    logical = psutil.cpu_count(logical=True) or 0
    detail = f"{machine.cpu_model()}; {physical} physical / {logical} logical cores, {usable} usable by aebench"
    return DeviceRow("cpu", "all", True, detail, tuple(thread_settings(usable)))


def discover(backends: Sequence[str] = BACKENDS, probe: Probe | None = None,
             problems: Mapping[str, str] | None = None) -> list[DeviceRow]:
    """The CPU row, then one row per (gpu|tpu, backend): available with names, or unavailable with the reason.

    ``problems`` (backend -> why it cannot run; default: the backends not installed) and ``probe`` (default: ask
    worker hosts) are parameters so tests can fake a machine.
    """
    problems = dict(backend_problems(backends) if problems is None else problems)
    installed = [backend for backend in backends if backend not in problems]
    found = summarize((probe or probe_in_workers)(installed) if installed else {})
    problems.update(found.problems)
    rows = [cpu_row()]
    for kind in ACCELERATORS:
        for backend in backends:
            if backend in problems:
                rows.append(DeviceRow(kind, backend, False, problems[backend]))
                continue
            count = found.counts.get((backend, kind), 0)
            if count:
                names = found.names.get((backend, kind)) or [f"{count} {kind.upper()}(s)"]
                rows.append(DeviceRow(kind, backend, True, ", ".join(names)))
            else:
                rows.append(DeviceRow(kind, backend, False, found.reasons.get((backend, kind), "not probed")))
    return rows


def format_devices(rows: Sequence[DeviceRow]) -> str:
    """A plain-text table: device, backend, status and, for the CPU, the thread settings that make sense."""
    text = [tabulate([(row.device, row.backend, row.status) for row in rows], ("device", "backend", "status"),
                     tablefmt="plain")]
    cpu = next((row for row in rows if row.device == "cpu"), None)
    if cpu is not None and cpu.threads:
        usable = cpu.threads[-1]
        text.append("")
        text.append(f"CPU threads to sweep: {', '.join(map(str, cpu.threads))} (threads = [...] in a matrix; "
                    f"{usable} usable). A CPU cell is pinned to that many cores with affinity and sets "
                    "intra-op threads = N; the inter-op threads the backend used are recorded with the result.")
    return "\n".join(text) + "\n"
