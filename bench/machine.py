"""The environment every result carries: machine, software versions and source revision.

Collected in the runner without importing the ML frameworks (package metadata gives their versions), so it costs
milliseconds. The worker adds what only it can see (the device it really ran on, the threads it really used).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

PACKAGES = ("tensorflow", "tensorflow-cpu", "keras", "jax", "jaxlib", "torch", "numpy", "pandas")


def cpuinfo_field(name: str) -> str | None:
    """The first value of a /proc/cpuinfo field ("model name", "flags", "cpu MHz"), or None where there is none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    return set((cpuinfo_field("flags") or "").split())


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (a container or taskset can allow fewer than the machine has)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:
        return list(range(os.cpu_count() or 1))


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def git_revision(cwd: Path | None = None) -> tuple[str, bool]:
    """(commit, dirty) of the source tree aebench runs from; ('unknown', False) outside git."""
    where = cwd or Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where, capture_output=True, text=True, timeout=10, check=True,
        ).stdout
        return commit, bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        return "unknown", False


def collect_environment() -> dict[str, Any]:
    memory = psutil.virtual_memory()
    commit, dirty = git_revision()
    env: dict[str, Any] = {
        "hostname": platform.node(),
        "cpu_model": cpu_model(),
        "cpu_physical_cores": psutil.cpu_count(logical=False) or 0,
        "cpu_logical_cores": psutil.cpu_count(logical=True) or 0,
        "cpu_usable": len(usable_cpus()),
        "cpu_flags": " ".join(sorted(cpu_flags() & {"avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "neon", "asimd"})),
        "ram_gb": round(memory.total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "executable": sys.executable,
        "git_commit": commit,
        "git_dirty": dirty,
    }
    env.update({f"version.{name}": version for name, version in package_versions().items()})
    env["machine_id"] = machine_id(env)
    return env


def machine_id(env: dict[str, Any]) -> str:
    """A short, stable fingerprint of the hardware, so results from different machines are never mixed up."""
    identity = "|".join(str(env.get(key)) for key in ("hostname", "cpu_model", "cpu_logical_cores", "ram_gb"))
    return hashlib.sha1(identity.encode()).hexdigest()[:12]
