"""Fixtures shared by the tests."""

from __future__ import annotations

import hashlib
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support import write_tiny_dataset


@pytest.fixture(autouse=True, scope="session")
def ctrl_c_as_a_terminal_sends_it() -> Iterator[None]:
    """A test session started in the background by a non-interactive shell (``make test &``, some CI launchers)
    inherits SIGINT ignored (POSIX), and so does every process it starts: the tests that stop a runner with Ctrl-C
    would then wait on a runner that never hears it. Python's own Ctrl-C handler here gives the session, and through
    exec every child, the SIGINT a terminal gives."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield


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


# -- stores: every store test runs on SQLite and on a real PostgreSQL ------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server on 127.0.0.1 for this test session (tests/postgres_server.py), stopped at its end.

    Skipped, with the reason, where none can start; CI sets AEBENCH_REQUIRE_POSTGRES=1, so there it fails instead."""
    import postgres_server as server

    reason = server.why_unavailable()
    if reason is not None:
        if os.environ.get("AEBENCH_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"AEBENCH_REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(f"the PostgreSQL store tests need a server: {reason}")
    with server.temporary_server() as url:
        yield url


@pytest.fixture
def postgres_url(postgres_server: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """An empty database of its own for this test, dropped after it."""
    import postgres_server as server

    name = "t_" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:16]
    with server.fresh_database(postgres_server, name) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """Where a store test keeps its store: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "s.sqlite"
    return request.getfixturevalue("postgres_url")
