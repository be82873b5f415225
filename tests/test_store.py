"""The result store, on both backends: the tests that take ``store_location`` run on a SQLite file and on a real
PostgreSQL server on 127.0.0.1 (conftest.py); those that take ``tmp_path`` only check what is SQLite's own."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from aebench.config import Matrix
from aebench.errors import UserError
from aebench.results import CellResult
from aebench.store import Store, new_run_id, open_store
from support import tiny_matrix_dict

ENV = {"git_commit": "abc123", "git_dirty": False, "machine_id": "m1", "cpu_model": "Test CPU"}


def _results(matrix: Matrix) -> list[CellResult]:
    first, second = matrix.cells()
    return [
        CellResult(cell=first, status="ok", duration_s=1.2345678901,  # PostgreSQL REAL (float4) would keep 1.2345679
                   metrics={"quality.mse": 0.01, "speed.train_ips": 1000.0, "speed.latency_b1_p50_ms": 1.2},
                   info={"backend": "tensorflow"}, exit_code=0,
                   artifacts={"grid_clean": np.arange(4, dtype=np.uint8).reshape(2, 2), "latency_b1_s": np.array([1e-3, 2e-3])}),
        CellResult(cell=second, status="failed", duration_s=0.5, exit_code=-9, error="killed by signal 9", stderr_tail="boom"),
    ]


def test_round_trip(store_location: str | Path) -> None:
    matrix = Matrix.from_dict(tiny_matrix_dict())
    with open_store(store_location) as store:
        run_id = store.begin_run(matrix, ENV, ["aebench", "run"])
        for result in _results(matrix):
            store.add_result(run_id, result)
        store.finish_run(run_id, "complete", 2.0, {"wall_s": 2.0})
    with open_store(store_location, create=False) as store:
        assert store.resolve_run(None) == run_id
        assert store.resolve_run(run_id[:12]) == run_id
        back = store.results(run_id)
        assert back == _results(matrix)  # artifacts are not compared by ==
        assert np.array_equal(back[0].artifacts["grid_clean"], np.arange(4).reshape(2, 2))
        only = store.artifacts(run_id, names=["latency_b1_s"])
        assert list(only) == [0] and list(only[0]) == ["latency_b1_s"]  # the grid is not read
        record = store.run_record(run_id)
        assert record["matrix"]["name"] == "tiny" and record["summary"] == {"wall_s": 2.0}
        assert record["environment"]["cpu_model"] == "Test CPU"
        frame = store.frame([run_id])
        for column in ("run_id", "variant", "noise", "threads", "device", "status", "quality.mse", "speed.train_ips",
                       "speed.latency_b1_p50_ms", "info.backend", "git_commit", "machine_id"):
            assert column in frame.columns, column
        assert list(frame["status"]) == ["ok", "failed"]
        runs = store.runs_frame()
        assert runs.loc[0, "ok"] == 1 and runs.loc[0, "failed"] == 1 and runs.loc[0, "status"] == "complete"
        assert runs.loc[0, "wall_s"] == 2.0 and back[0].duration_s == 1.2345678901 and back[0].metrics["speed.latency_b1_p50_ms"] == 1.2


def test_results_are_never_overwritten(store_location: str | Path) -> None:
    matrix = Matrix.from_dict(tiny_matrix_dict())
    with open_store(store_location) as store:
        run_id = store.begin_run(matrix, ENV, [])
        result = _results(matrix)[0]
        store.add_result(run_id, result)
        with pytest.raises(store.Error):
            store.add_result(run_id, result)
        assert len(store.results(run_id)) == 1  # the refused write left nothing behind
        second = store.begin_run(matrix, ENV, [])
        assert second != run_id and len(store.runs_frame()) == 2


def test_unknown_and_ambiguous_run_refs(store_location: str | Path) -> None:
    with open_store(store_location) as store:
        with pytest.raises(UserError, match="holds no runs yet"):
            store.resolve_run(None)
        matrix = Matrix.from_dict(tiny_matrix_dict())
        store.begin_run(matrix, ENV, [], run_id="20260101T000000-aaaaaa")
        store.begin_run(matrix, ENV, [], run_id="20260101T000000-bbbbbb")
        with pytest.raises(UserError, match="matches 2 runs"):
            store.resolve_run("2026")
        with pytest.raises(UserError, match="matches no run"):
            store.resolve_run("1999")
        with pytest.raises(UserError, match="matches no run"):
            store.resolve_run("2026%")  # LIKE's wildcards in a ref are taken literally


def test_missing_store_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no result store"):
        open_store(tmp_path / "none.sqlite", create=False)
    assert not (tmp_path / "none.sqlite").exists()


def test_an_empty_file_opened_to_read_is_refused_and_left_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.sqlite"
    path.touch()
    with pytest.raises(UserError, match="holds no aebench results yet"):
        open_store(path, create=False)
    assert path.stat().st_size == 0 and not path.with_name("empty.sqlite-wal").exists()


def test_other_schema_version_gets_an_actionable_message(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    open_store(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(UserError, match="schema version 99; this aebench reads version 2: move the file aside"):
        open_store(path)


def test_foreign_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(UserError, match="not an aebench result store"):
        open_store(path)


def test_run_ids_sort_by_time() -> None:
    from datetime import datetime, timezone

    early = new_run_id(datetime(2026, 1, 1, tzinfo=timezone.utc))
    late = new_run_id(datetime(2026, 1, 2, tzinfo=timezone.utc))
    assert early < late


def test_result_validation() -> None:
    cell = Matrix.from_dict(tiny_matrix_dict()).cells()[0]
    with pytest.raises(ValueError, match="status 'great'"):
        CellResult(cell=cell, status="great", duration_s=1)
    with pytest.raises(ValueError, match="needs an error"):
        CellResult(cell=cell, status="failed", duration_s=1)
    with pytest.raises(ValueError, match="dotted names"):
        CellResult(cell=cell, status="ok", duration_s=1, metrics={"mse": 1.0})
    with pytest.raises(ValueError, match="duration_s"):
        CellResult(cell=cell, status="ok", duration_s=float("nan"))
    result = CellResult(cell=cell, status="ok", duration_s=1, metrics={"quality.mse": float("inf")})
    assert result.metrics["quality.mse"] is None
    with pytest.raises(TypeError):
        result.metrics["quality.mse"] = 1.0  # type: ignore[index]


# -- runners that die: their runs are abandoned -------------------------------------------------------------------------

def test_a_version_1_store_is_upgraded_in_place_keeping_its_runs(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite"
    open_store(path).close()
    with sqlite3.connect(path) as db:  # as aebench wrote it before runners recorded host, pid and heartbeat
        for column in ("host", "pid", "heartbeat_at", "invocation_started_at"):
            db.execute(f"ALTER TABLE runs DROP COLUMN {column}")
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
        db.execute("INSERT INTO runs VALUES ('20260101T000000-aaaaaa', '2026-01-01T00:00:00+00:00', NULL, 'running',"
                   " 'tiny', '{}', '[]', NULL, 0, 'm1', '{}', NULL, NULL)")
    with open_store(path, create=False) as store:
        record = store.run_record("20260101T000000-aaaaaa")
        assert record["status"] == "running" and record["host"] is None  # nothing tells whether its runner lives
        assert store.runs_frame()["status"].tolist() == ["running"]
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta").fetchone() == ("2",)


def test_two_processes_upgrading_one_old_store_at_once_both_succeed(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "v1.sqlite"
    open_store(path).close()
    with sqlite3.connect(path) as db:
        for column in ("host", "pid", "heartbeat_at", "invocation_started_at"):
            db.execute(f"ALTER TABLE runs DROP COLUMN {column}")
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    opener = f"from aebench.store import open_store\nfor _ in range(20): open_store({str(path)!r}, create=False).close()"
    openers = [subprocess.Popen([sys.executable, "-c", opener], stderr=subprocess.PIPE, text=True) for _ in range(3)]
    assert [process.wait(timeout=120) for process in openers] == [0, 0, 0], [p.stderr.read() for p in openers]
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta").fetchone() == ("2",)
        assert "invocation_started_at" in [row[1] for row in db.execute("PRAGMA table_info(runs)")]


def test_a_run_whose_runner_is_gone_is_abandoned(store_location: str | Path) -> None:
    import subprocess
    import sys

    matrix = Matrix.from_dict(tiny_matrix_dict())
    with open_store(store_location) as store:
        live = store.begin_run(matrix, {}, [])  # this process: alive
        dead = store.begin_run(matrix, {}, [])
        gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        with store._transaction() as db:  # a runner that has exited since
            db.execute(store._sql("UPDATE runs SET pid = ? WHERE run_id = ?"), (int(gone.stdout), dead))
        statuses = dict(zip(store.runs_frame()["run_id"], store.runs_frame()["status"]))
        assert statuses == {live: "running", dead: "abandoned"}
        assert store.run_record(dead)["status"] == "abandoned"
        store.finish_run(dead, "interrupted", 1.0, {})
        assert store.run_record(dead)["status"] == "interrupted"  # a recorded status is kept as it is


def test_a_resumed_runs_live_runner_started_after_the_run_is_running(store_location: str | Path) -> None:
    import subprocess
    import sys

    matrix = Matrix.from_dict(tiny_matrix_dict())
    runner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # started after the run
    try:
        with open_store(store_location) as store:
            run_id = store.begin_run(matrix, {}, [])
            with store._transaction() as db:  # begun an hour ago; this invocation's runner started just now
                db.execute(store._sql("UPDATE runs SET started_at = '2026-01-01T00:00:00+00:00', pid = ?,"
                                      " invocation_started_at = ? WHERE run_id = ?"),
                           (runner.pid, store.run_record(run_id)["heartbeat_at"], run_id))
            assert store.run_record(run_id)["status"] == "running"
            assert store.runs_frame()["status"].tolist() == ["running"]
    finally:
        runner.kill()
        runner.wait()


def test_another_hosts_run_is_abandoned_when_its_heartbeat_is_stale() -> None:
    from datetime import datetime, timedelta, timezone

    from aebench.store import STALE_AFTER_S, run_status

    now = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
    record = {"status": "running", "host": "another-host", "pid": 1, "started_at": "2026-11-27T11:00:00+00:00"}
    fresh = (now - timedelta(seconds=STALE_AFTER_S / 2)).isoformat()
    stale = (now - timedelta(seconds=STALE_AFTER_S * 2)).isoformat()
    assert run_status({**record, "heartbeat_at": fresh}, now) == "running"
    assert run_status({**record, "heartbeat_at": stale}, now) == "abandoned"


def test_the_heartbeat_stamps_the_run_while_it_runs(store_location: str | Path) -> None:
    import time

    from aebench.session import Heartbeat

    with open_store(store_location) as store:
        run_id = store.begin_run(Matrix.from_dict(tiny_matrix_dict()), {}, [])
        first = store.run_record(run_id)["heartbeat_at"]
        with Heartbeat(store, run_id, interval_s=0.01) as heartbeat:
            deadline = time.monotonic() + 30
            while store.run_record(run_id)["heartbeat_at"] == first:  # stamped while the run runs
                assert time.monotonic() < deadline
                time.sleep(0.01)
        assert not heartbeat._thread.is_alive()  # and stopped with it: nothing stamps the run any more


def test_push_all_leaves_a_running_run_for_later(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from aebench.cli import main

    matrix = Matrix.from_dict(tiny_matrix_dict())
    with open_store(tmp_path / "local.sqlite") as store:
        done = store.begin_run(matrix, {}, [])
        store.finish_run(done, "complete", 1.0, {})
        running = store.begin_run(matrix, {}, [])  # its runner, this process, lives
    push = ["push", "--to", str(tmp_path / "shared.sqlite"), "--store", str(tmp_path / "local.sqlite")]
    assert main([push[0], "all", *push[1:]]) == 0
    out = capsys.readouterr().out
    assert f"{done}: 0 of 0 cells copied" in out or f"{done}: already there" in out
    assert f"{running}: still running, not pushed" in out
    with open_store(tmp_path / "shared.sqlite", create=False) as shared:
        assert list(shared.runs_frame()["run_id"]) == [done]
    assert main([push[0], running, *push[1:]]) == 2  # named, it is refused: it has not finished
    assert f"run {running} is still running" in capsys.readouterr().err


def test_the_heartbeat_reconnects_after_a_lost_connection() -> None:
    """A server restart leaves a connection dead for good: beats go on over a fresh one, not on the dead one."""
    import threading

    from aebench.session import Heartbeat

    class Lost(Exception):
        pass

    class Connection:
        def __init__(self, number: int) -> None:
            self.number, self.closed = number, False

        def beat(self, run_id: str) -> None:
            if self.number == 1:
                raise Lost("server closed the connection unexpectedly")
            beats.append((self.number, run_id))
            if len(beats) >= 2:
                done.set()

        def close(self) -> None:
            self.closed = True

    class FakeStore:
        Error = Lost

        def reopen(self) -> Connection:
            opened.append(Connection(len(opened) + 1))
            return opened[-1]

    opened: list[Connection] = []
    beats: list[tuple[int, str]] = []
    done = threading.Event()
    with Heartbeat(FakeStore(), "run", interval_s=0.001):  # type: ignore[arg-type]
        assert done.wait(30)
    assert beats[:2] == [(2, "run"), (2, "run")] and len(opened) == 2
    assert all(connection.closed for connection in opened)


# -- PostgreSQL's own: a server's database, its schema check, many machines at once ---------------------------------

def test_an_empty_postgres_database_is_no_store_to_read(postgres_url: str) -> None:
    with pytest.raises(UserError, match="holds no aebench results yet: run 'aebench run --store"):
        open_store(postgres_url, create=False)


def test_a_postgres_database_of_another_schema_version_or_program_is_refused(postgres_url: str) -> None:
    import psycopg

    open_store(postgres_url).close()
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(UserError, match="schema version 99; this aebench reads version 2"):
        open_store(postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("DROP TABLE meta")
    with pytest.raises(UserError, match="is not an aebench result store"):
        open_store(postgres_url)


def test_an_unreachable_server_is_a_user_error_that_hides_the_password(postgres_server: str) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(UserError) as raised:
        open_store(f"postgresql://someone:s3cret@127.0.0.1:{port}/db")
    message = str(raised.value)
    assert message.startswith(f"the store postgresql://someone:***@127.0.0.1:{port}/db cannot be opened")
    assert "s3cret" not in message


def test_machines_opening_an_empty_database_at_once_create_the_schema_once(postgres_url: str) -> None:
    import subprocess
    import sys

    opener = f"from aebench.store import open_store\nfor _ in range(10): open_store({postgres_url!r}).close()"
    openers = [subprocess.Popen([sys.executable, "-c", opener], stderr=subprocess.PIPE, text=True) for _ in range(4)]
    assert [process.wait(timeout=120) for process in openers] == [0, 0, 0, 0], [p.stderr.read() for p in openers]
    with open_store(postgres_url, create=False) as store:
        assert store.runs_frame().empty


# -- aebench push: a run copied into another store, idempotently ------------------------------------------------------

def test_a_pushed_run_reads_back_the_same_and_a_second_push_copies_nothing(tmp_path: Path,
                                                                           store_location: str | Path) -> None:
    matrix = Matrix.from_dict(tiny_matrix_dict())
    with open_store(tmp_path / "local.sqlite") as local:
        run_id = local.begin_run(matrix, ENV, ["aebench", "run"])
        for result in _results(matrix):
            local.add_result(run_id, result)
        local.finish_run(run_id, "complete", 2.0, {"wall_s": 2.0})
        copy = local.copy_of_run(run_id)
        source_frame = local.frame([run_id])
    with open_store(store_location) as shared:
        assert shared.receive_run(copy) == 2
        assert shared.receive_run(copy) == 0  # idempotent: pushed twice, stored once
        assert shared.results(run_id) == _results(matrix)
        assert np.array_equal(shared.artifacts(run_id)[0]["latency_b1_s"], [1e-3, 2e-3])
        assert shared.frame([run_id]).equals(source_frame)
        assert shared.run_record(run_id)["status"] == "complete" and len(shared.runs_frame()) == 1


def _stored_run(store: Store, matrix: Matrix, results: list[CellResult], status: str) -> str:
    """A run of ``results`` in ``store``, finished with ``status``."""
    run_id = store.begin_run(matrix, ENV, [])
    for result in results:
        store.add_result(run_id, result)
    store.finish_run(run_id, status, 1.0, {})
    return run_id


def test_two_runners_resuming_one_run_at_once_cannot_both_claim_it(store_location: str | Path) -> None:
    with open_store(store_location) as store:
        run_id = store.begin_run(Matrix.from_dict(tiny_matrix_dict()), {}, [])
        store.finish_run(run_id, "interrupted", 1.0, {})
        first, second = store.run_record(run_id), store.run_record(run_id)  # both read it before either claims
        store.claim_run(first)
        with pytest.raises(UserError, match="resumed by another runner meanwhile"):
            store.claim_run(second)
        assert store.run_record(run_id)["status"] == "running"


def test_an_older_copy_pushed_again_undoes_nothing_and_another_run_with_the_id_is_refused(
        tmp_path: Path, store_location: str | Path) -> None:
    matrix = Matrix.from_dict(tiny_matrix_dict())
    first, _ = _results(matrix)
    with open_store(tmp_path / "local.sqlite") as local, open_store(store_location) as shared:
        run_id = _stored_run(local, matrix, [first], "interrupted")
        old_copy = local.copy_of_run(run_id)
        local.finish_run(run_id, "complete", 2.0, {"wall_s": 2.0})
        shared.receive_run(local.copy_of_run(run_id))
        assert shared.receive_run(old_copy) == 0  # a backup taken before the finish
        assert shared.run_record(run_id)["status"] == "complete" and shared.run_record(run_id)["wall_s"] == 2.0
        stranger = {**old_copy.run, "started_at": "2020-01-01T00:00:00.000+00:00"}
        with pytest.raises(UserError, match="is another run than the one pushed"):
            shared.receive_run(dataclasses.replace(old_copy, run=stranger))


def test_a_cell_retried_after_its_run_was_pushed_replaces_its_failure_there(tmp_path: Path,
                                                                              store_location: str | Path) -> None:
    matrix = Matrix.from_dict(tiny_matrix_dict())
    first, failed = _results(matrix)
    with open_store(tmp_path / "local.sqlite") as local, open_store(store_location) as shared:
        run_id = _stored_run(local, matrix, [first, failed], "complete")
        before_retry = local.copy_of_run(run_id)
        shared.receive_run(before_retry)
        retried = dataclasses.replace(first, cell=failed.cell)
        local.replace_failed_result(run_id, retried)  # aebench run --resume RUN --retry-failed
        local.finish_run(run_id, "complete", 2.0, {})
        assert shared.receive_run(local.copy_of_run(run_id)) == 1
        assert shared.receive_run(local.copy_of_run(run_id)) == 0
        assert shared.receive_run(before_retry) == 0  # the failure it replaced comes back in an old copy: no change
        second = shared.results(run_id)[1]
        assert second.status == "ok" and second.info["earlier_attempt"].startswith("failed (exit code -9)")
        assert shared.results(run_id) == local.results(run_id)


def test_a_run_pushed_before_its_resumed_part_gets_only_the_cells_it_lacks(tmp_path: Path,
                                                                           store_location: str | Path) -> None:
    matrix = Matrix.from_dict(tiny_matrix_dict())
    first, second = _results(matrix)
    with open_store(tmp_path / "local.sqlite") as local, open_store(store_location) as shared:
        run_id = _stored_run(local, matrix, [first], "interrupted")
        assert shared.receive_run(local.copy_of_run(run_id)) == 1
        local.add_result(run_id, second)  # the resumed part
        local.finish_run(run_id, "complete", 2.0, {})
        assert shared.receive_run(local.copy_of_run(run_id)) == 1
        assert [r.status for r in shared.results(run_id)] == ["ok", "failed"]
        assert shared.run_record(run_id)["status"] == "complete"


def test_a_push_whose_cell_differs_from_the_stored_one_is_refused_whole(tmp_path: Path,
                                                                        store_location: str | Path) -> None:
    matrix = Matrix.from_dict(tiny_matrix_dict())
    first, second = _results(matrix)
    with open_store(tmp_path / "a.sqlite") as a, open_store(store_location) as shared:
        run_id = a.begin_run(matrix, ENV, [], run_id="20260101T000000-aaaaaa")
        a.add_result(run_id, first)
        shared.receive_run(a.copy_of_run(run_id))
        with open_store(tmp_path / "b.sqlite") as b:  # another store whose run has the same id but other results
            b.begin_run(matrix, ENV, [], run_id=run_id, started_at=a.run_record(run_id)["started_at"])
            b.add_result(run_id, CellResult(cell=first.cell, status="failed", duration_s=1.0, error="x"))
            b.add_result(run_id, second)
            with pytest.raises(UserError, match="cell 0 differs"):
                shared.receive_run(b.copy_of_run(run_id))
        assert [r.status for r in shared.results(run_id)] == ["ok"]  # nothing of the refused push was kept
