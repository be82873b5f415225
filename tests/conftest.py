"""Fixtures shared by the tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from support import write_tiny_dataset


@pytest.fixture(autouse=True)
def own_cache_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets a cache folder of its own (revisions, the machine lock), inherited by the processes it starts:
    a test suite run beside a real benchmark neither waits for its machine lock nor takes it."""
    folder = tmp_path_factory.mktemp("aebench-cache")
    monkeypatch.setenv("AEBENCH_CACHE", str(folder))
    return folder


@pytest.fixture
def tiny_dataset_dir(tmp_path: Path) -> Path:
    """A few hundred real MNIST images when the shared data is there, else synthetic digits-like blobs."""
    return write_tiny_dataset(tmp_path / "data")


@dataclass
class FaultLog:
    """What the fault-injection suite did, summed over the session for its one summary line."""

    faults: int = 0
    bad_inputs: int = 0
    cells_lost: int = 0


FAULT_LOG = FaultLog()


@pytest.fixture
def fault_log() -> FaultLog:
    return FAULT_LOG


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FAULT_LOG.faults or FAULT_LOG.bad_inputs:
        terminalreporter.write_line(f"faults injected {FAULT_LOG.faults}, bad inputs tried {FAULT_LOG.bad_inputs}, "
                                    f"cells lost {FAULT_LOG.cells_lost}")
