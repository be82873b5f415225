"""The environment every result carries: machine, software versions and source revision.

Collected in the runner without importing the ML frameworks (package metadata gives their versions). Its slowest part,
py-cpuinfo's reading of the CPU (0.3 s or more), is taken once per run and handed down to the workers. The worker adds
what only it can see (the device it really ran on, the threads it really used).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import cpuinfo
import psutil

# The runner hands its reading of the CPU to its workers in this variable (see cpu_info).
CPU_INFO_VARIABLE = "AEBENCH_CPU_INFO"
PACKAGES = ("tensorflow", "tensorflow-cpu", "keras", "jax", "jaxlib", "torch", "numpy", "pandas")


@functools.cache
def cpu_info() -> dict[str, Any]:
    """py-cpuinfo's description of this CPU (``brand_raw``, ``flags``, ...), read once per process.

    Reading it takes 0.3 s or more (py-cpuinfo also runs lscpu and a CPUID child process), so the runner hands its
    reading to the worker processes it starts (``CPU_INFO_VARIABLE``) rather than have every cell read it again."""
    handed_down = os.environ.get(CPU_INFO_VARIABLE)
    if handed_down:
        return json.loads(handed_down)
    try:
        return cpuinfo.get_cpu_info()
    except Exception:  # noqa: BLE001 - py-cpuinfo raises on CPUs it does not know; the fallbacks below cover them
        return {}


def cpu_info_for_workers() -> str:
    """The part of ``cpu_info()`` that workers use, as the value of ``CPU_INFO_VARIABLE``."""
    return json.dumps({key: value for key, value in cpu_info().items() if key in ("brand_raw", "flags")})


def cpu_model() -> str:
    return cpu_info().get("brand_raw") or platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """Instruction-set extensions ("avx2", "fma", ...): those of /proc/cpuinfo, and those CPUID reports on x86."""
    return set(cpu_info().get("flags") or ())


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (a container or taskset can allow fewer than the machine has)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:
        return list(range(os.cpu_count() or 1))


def cell_cpus(threads: int | None) -> list[int]:
    """The CPUs a cell of ``threads`` threads is pinned to (aebench.worker.pin_cpus): the first ones it may use, or
    all of them when the cell names no thread count (a GPU cell)."""
    allowed = usable_cpus()
    if threads is not None and threads > len(allowed):
        raise RuntimeError(f"threads={threads} but only {len(allowed)} CPUs are usable")
    return allowed[:threads] if threads is not None else allowed


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


# A copy of aebench installed from a wheel or into a --target folder has no git history of its own beside it (and
# may sit inside some other project's repository). The builds that make such copies (bench/gpu_wheels.sh, aebench ab's
# revision cache) write the revision they were built from here, and outside the source checkout that record wins
# over git.
REVISION_FILE = "_revision.json"
PACKAGE_DIR = Path(__file__).resolve().parent


def write_revision(package_dir: Path, commit: str, dirty: bool, commit_date: str | None) -> Path:
    """Record in an installed copy of the package the revision it was built from (read by ``git_revision``)."""
    from aebench import atomic  # whole or absent: a process starting from the copy meanwhile never reads half

    path = package_dir / REVISION_FILE
    atomic.write_text(path, json.dumps({"commit": commit, "dirty": dirty, "date": commit_date}) + "\n")
    return path


def _recorded_revision(package_dir: Path) -> tuple[str, bool, str | None] | None:
    try:
        record = json.loads((package_dir / REVISION_FILE).read_text())
        commit, dirty, date = record["commit"], record["dirty"], record.get("date")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(commit, str) or not commit or not isinstance(dirty, bool):
        return None
    return commit, dirty, date if isinstance(date, str) else None


def git_revision(cwd: Path | None = None) -> tuple[str, bool, str | None]:
    """(commit, dirty, committer date in ISO 8601) of the source tree aebench runs from: the revision an installed
    copy recorded when it was built, else git's view of the checkout; ('unknown', False, None) when neither knows.
    The date orders a store's runs by commit in ``aebench history``."""
    # In the source checkout (an editable install) git knows best: a record left there by an interrupted wheel
    # build would otherwise name an old commit as clean.
    in_checkout = (PACKAGE_DIR.parent / "pyproject.toml").is_file()
    if cwd is None and not in_checkout and (recorded := _recorded_revision(PACKAGE_DIR)) is not None:
        return recorded
    where = cwd or PACKAGE_DIR.parent
    try:
        commit, date = subprocess.run(
            ["git", "show", "-s", "--format=%H%x00%cI", "HEAD"], cwd=where, capture_output=True, text=True,
            timeout=10, check=True,
        ).stdout.strip().split("\x00")
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where, capture_output=True, text=True, timeout=10, check=True,
        ).stdout
        return commit, bool(status.strip()), date
    except (OSError, subprocess.SubprocessError, ValueError):
        return "unknown", False, None


# What identifies a machine (machine_id hashes them); a cell stores them with its id (info.*).
FINGERPRINT_KEYS = ("hostname", "cpu_model", "cpu_logical_cores", "ram_gb")


def fingerprint() -> dict[str, Any]:
    """The machine a process runs on: host, CPU model, cores and memory, with their ``machine_id``. Every cell stores
    its own (``info.machine_id``), so a run spread over several machines still says which one timed which cell."""
    identity: dict[str, Any] = {
        "hostname": platform.node(),
        "cpu_model": cpu_model(),
        "cpu_logical_cores": psutil.cpu_count(logical=True) or 0,
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
    }
    return identity | {"machine_id": machine_id(identity)}


def collect_environment() -> dict[str, Any]:
    commit, dirty, commit_date = git_revision()
    env: dict[str, Any] = {
        **fingerprint(),
        "cpu_physical_cores": psutil.cpu_count(logical=False) or 0,
        "cpu_usable": len(usable_cpus()),
        "cpu_flags": " ".join(sorted(cpu_flags() & {"avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "neon", "asimd"})),
        "os": platform.platform(),
        "python": platform.python_version(),
        "executable": sys.executable,
        "git_commit": commit,
        "git_dirty": dirty,
        "git_commit_date": commit_date,
    }
    env.update({f"version.{name}": version for name, version in package_versions().items()})
    return env


def machine_id(env: dict[str, Any]) -> str:
    """A short, stable fingerprint of the hardware, so results from different machines are never mixed up."""
    identity = "|".join(str(env.get(key)) for key in FINGERPRINT_KEYS)
    return hashlib.sha1(identity.encode()).hexdigest()[:12]
