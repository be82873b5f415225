"""The result store, whatever holds it: append-only, one row per run (an ``aebench run`` invocation), one per cell,
and the cells' arrays (image grids, raw latency samples) as .npy blobs. Rows are never updated once a run is
finished, and nothing is ever overwritten: a rerun is a new run.

This module holds everything the backends share: the schema, and every query, written once in SQL that SQLite and
PostgreSQL both read (with ``?`` placeholders, which a backend may rewrite). aebench.store.sqlite and
aebench.store.postgres only connect, create or check the schema, and say what a transaction is.

Metrics and info are stored as JSON objects of dot-keyed numbers and strings, read back with ``json.loads`` only
(never eval or pickle), and flattened into one pandas row per cell.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import socket
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil

from aebench.config import Cell, Matrix
from aebench.errors import CannotWrite, UserError
from aebench.load import CONTAMINATED
from aebench.metrics import REGISTRY, flag_is_set
from aebench.results import CellResult

SCHEMA_VERSION = 2
REPORTS_DIR = Path("reports")  # where results, reports and pages go unless a command is told otherwise
DEFAULT_STORE = REPORTS_DIR / "aebench.sqlite"

# Written for SQLite; aebench.store.postgres maps its two types that PostgreSQL spells otherwise (REAL, BLOB).
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL,
    matrix_name TEXT NOT NULL,
    matrix_json TEXT NOT NULL,
    argv TEXT NOT NULL,
    git_commit TEXT,
    git_dirty INTEGER,
    machine_id TEXT,
    environment_json TEXT NOT NULL,
    wall_s REAL,
    summary_json TEXT,
    host TEXT,
    pid INTEGER,
    heartbeat_at TEXT,
    invocation_started_at TEXT
);
CREATE TABLE IF NOT EXISTS cells (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    cell INTEGER NOT NULL,
    key TEXT NOT NULL,
    cell_json TEXT NOT NULL,
    status TEXT NOT NULL,
    exit_code INTEGER,
    error TEXT NOT NULL,
    stderr_tail TEXT NOT NULL,
    duration_s REAL NOT NULL,
    metrics_json TEXT NOT NULL,
    info_json TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    PRIMARY KEY (run_id, cell)
);
CREATE TABLE IF NOT EXISTS artifacts (
    run_id TEXT NOT NULL,
    cell INTEGER NOT NULL,
    name TEXT NOT NULL,
    npy BLOB NOT NULL,
    PRIMARY KEY (run_id, cell, name)
);
"""

HEARTBEAT_S = 2.0  # how often a runner says it is alive (aebench.session.Heartbeat)
STALE_AFTER_S = 60.0  # a run of another host whose heartbeat is older than this is abandoned

RUN_COLUMNS = ("run_id", "started_at", "git_commit", "git_dirty", "machine_id", "matrix_name")  # in the flat table
RUN_TABLE_COLUMNS = ("run_id", "started_at", "finished_at", "status", "matrix_name", "matrix_json", "argv", "git_commit",
                     "git_dirty", "machine_id", "environment_json", "wall_s", "summary_json", "host", "pid",
                     "heartbeat_at", "invocation_started_at")
CELL_COLUMNS = ("run_id", "cell", "key", "cell_json", "status", "exit_code", "error", "stderr_tail", "duration_s",
                "metrics_json", "info_json", "finished_at")


def utc_now() -> str:
    # Milliseconds: an abandoned invocation's wall is measured between these stamps (Store.abandoned_wall_s).
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def new_run_id(now: datetime | None = None) -> str:
    """Sortable by time and unique across machines: 20261126T181502-3fa9c1."""
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


def _to_npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


def _from_npy(blob: bytes) -> np.ndarray:
    return np.load(io.BytesIO(blob), allow_pickle=False)


@dataclass(frozen=True)
class RunCopy:
    """One run as stored, every column of every row: what ``aebench push`` carries from one store to another."""

    run: Mapping[str, Any]  # the runs row, by column
    cells: Sequence[Mapping[str, Any]]  # the cells rows, by column, in cell order
    artifacts: Sequence[tuple[int, str, bytes]]  # (cell, name, npy)


class Store:
    """A result store. Open one with ``aebench.store.open_store``: a file path gives SQLite, a ``postgresql://`` URL
    PostgreSQL. Subclasses connect and prepare the schema; every query is here."""

    #: The backend's database error: a write that fails (a full disk, a lost server) raises one of these.
    Error: type[Exception] = Exception
    #: Where this store is, for messages (a path, or a URL without its password).
    location: str
    _db: Any  # the backend's DB-API connection

    # -- what a backend provides ---------------------------------------------------------------------------------------

    @property
    def local_folder(self) -> Path:
        """The folder on this machine for what a run keeps beside its results (checkpoints, shared weights, the
        classifier cache): beside a store file, or ``reports/`` for a server's store."""
        return DEFAULT_STORE.parent.absolute()

    def reopen(self) -> Store:
        """A second connection to this store, for another thread (the run's heartbeat)."""
        raise NotImplementedError

    def _sql(self, query: str) -> str:
        """``query`` in the backend's placeholder style (the queries here use ``?``)."""
        return query

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        """A cursor inside one transaction: committed at the end, rolled back if anything raises."""
        raise NotImplementedError

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def writing(self, run_id: str | None = None, kept: str | None = None) -> Iterator[None]:
        """A write that fails (a full disk, an I/O error, a server gone) stops with one line saying what is kept
        (CannotWrite, exit 3): ``kept``, or for the run ``run_id`` under way its stored cells."""
        try:
            yield
        except self.Error as error:
            if kept is None:
                kept = (f"the cells stored so far are kept; make room and continue with --resume {run_id}" if run_id
                        else "nothing was run")
            raise CannotWrite(f"the store {self.location} cannot be written ({error}): {kept}") from error

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading helpers -----------------------------------------------------------------------------------------------

    def _rows(self, query: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._transaction() as cursor:
            cursor.execute(self._sql(query), tuple(parameters))
            return list(cursor.fetchall())

    def _frame(self, query: str, parameters: Sequence[Any] = ()) -> pd.DataFrame:
        """The rows as a table, its columns named by the query (an empty table keeps them too)."""
        with self._transaction() as cursor:
            cursor.execute(self._sql(query), tuple(parameters))
            return pd.DataFrame(cursor.fetchall(), columns=[column[0] for column in cursor.description])

    def _records(self, query: str, parameters: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """The rows as dicts, their values as stored (a NULL stays None, where a table would make it NaN)."""
        with self._transaction() as cursor:
            cursor.execute(self._sql(query), tuple(parameters))
            names = [column[0] for column in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]

    # -- writing -------------------------------------------------------------------------------------------------------

    def begin_run(self, matrix: Matrix, environment: Mapping[str, Any], argv: Sequence[str], run_id: str | None = None,
                  started_at: str | None = None) -> str:
        run_id = run_id or new_run_id()
        now = started_at or utc_now()
        with self._transaction() as cursor:
            cursor.execute(self._sql(
                "INSERT INTO runs (run_id, started_at, status, matrix_name, matrix_json, argv, git_commit, git_dirty,"
                " machine_id, environment_json, host, pid, heartbeat_at, invocation_started_at)"
                " VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                (run_id, now, matrix.name, json.dumps(matrix.to_dict()), json.dumps(list(argv)),
                 environment.get("git_commit"), int(bool(environment.get("git_dirty"))), environment.get("machine_id"),
                 json.dumps(dict(environment)), socket.gethostname(), os.getpid(), now, now),
            )
        return run_id

    def claim_run(self, record: Mapping[str, Any]) -> str:
        """A resumed run's runner is this process now: its host, pid and heartbeat replace the earlier runner's, and
        this invocation starts now. Returns that time.

        ``record`` is the run as this process read it to decide to resume: the claim holds only if no other runner
        claimed the run (or beat its heart) since, so two ``--resume`` of one run (from two machines of a fleet, on
        a shared store) cannot both run its cells."""
        now = utc_now()
        seen = {"run_id": record["run_id"], "status": record["stored_status"], "host": record["host"],
                "pid": record["pid"], "heartbeat_at": record["heartbeat_at"]}
        unchanged = " AND ".join(f"{column} IS NULL" if value is None else f"{column} = ?"
                                 for column, value in seen.items())
        with self._transaction() as cursor:
            cursor.execute(self._sql(
                "UPDATE runs SET status = 'running', host = ?, pid = ?, heartbeat_at = ?, invocation_started_at = ?"
                f" WHERE {unchanged}"), (socket.gethostname(), os.getpid(), now, now,
                                         *(value for value in seen.values() if value is not None)))
            claimed = cursor.rowcount == 1
        if not claimed:
            raise UserError(f"run {record['run_id']} was resumed by another runner meanwhile: allowed one --resume "
                            "of a run at a time ('aebench list' shows who runs it)")
        return now

    def abandoned_wall_s(self, record: Mapping[str, Any]) -> float:
        """How long the last invocation of an abandoned run (its ``run_record``) ran before it died: from its start to
        its last sign of life, the later of its last heartbeat and its last stored cell. A lower bound, so the run's
        summary never counts cells without the time they took."""
        run_id = record["run_id"]
        began = record.get("invocation_started_at") or record["started_at"]
        last_cell = self._rows("SELECT MAX(finished_at) FROM cells WHERE run_id = ? AND finished_at >= ?",
                               (run_id, began))[0][0]
        signs = [datetime.fromisoformat(t) for t in (record.get("heartbeat_at"), last_cell) if t]
        return max([0.0] + [(t - datetime.fromisoformat(began)).total_seconds() for t in signs])

    def beat(self, run_id: str) -> None:
        """The runner is alive (see ``run_status``)."""
        with self._transaction() as cursor:
            cursor.execute(self._sql("UPDATE runs SET heartbeat_at = ? WHERE run_id = ?"), (utc_now(), run_id))

    def add_result(self, run_id: str, result: CellResult) -> None:
        with self._transaction() as cursor:
            self._insert_result(cursor, run_id, result)

    def replace_failed_result(self, run_id: str, result: CellResult) -> None:
        """Store a retried cell's new result in place of its failed or timed-out one, keeping what the earlier
        attempt was in ``info.earlier_attempt`` (status, exit code, error): a failure is replaced, never forgotten."""
        with self._transaction() as cursor:  # one transaction: a crash leaves the failure or its replacement
            self._lock_run(cursor, run_id)
            cursor.execute(self._sql("SELECT status, exit_code, error FROM cells WHERE run_id = ? AND cell = ?"),
                           (run_id, result.cell.index))
            row = cursor.fetchone()
            if row is None or row[0] not in ("failed", "timeout"):
                raise ValueError(f"cell {result.cell.index} of run {run_id} has no failed result to replace")
            status, exit_code, error = row
            retried = replace(result, info={**result.info,
                                            "earlier_attempt": f"{status} (exit code {exit_code}): {error}"})
            cursor.execute(self._sql("DELETE FROM artifacts WHERE run_id = ? AND cell = ?"), (run_id, result.cell.index))
            cursor.execute(self._sql("DELETE FROM cells WHERE run_id = ? AND cell = ?"), (run_id, result.cell.index))
            self._insert_result(cursor, run_id, retried)

    def finish_run(self, run_id: str, status: str, wall_s: float, summary: Mapping[str, Any]) -> None:
        with self._transaction() as cursor:
            cursor.execute(self._sql(
                "UPDATE runs SET finished_at = ?, status = ?, wall_s = ?, summary_json = ? WHERE run_id = ?"),
                (utc_now(), status, wall_s, json.dumps(dict(summary)), run_id),
            )

    def _insert_result(self, cursor: Any, run_id: str, result: CellResult) -> None:
        self._insert_cell_rows(cursor, [
            (run_id, result.cell.index, result.cell.key, json.dumps(result.cell.to_dict()), result.status,
             result.exit_code, result.error, result.stderr_tail, result.duration_s,
             json.dumps(dict(result.metrics)), json.dumps(dict(result.info)), utc_now())],
            [(run_id, result.cell.index, name, _to_npy(array)) for name, array in result.artifacts.items()])

    def _insert_cell_rows(self, cursor: Any, cells: Sequence[Sequence[Any]],
                          artifacts: Sequence[tuple[str, int, str, bytes]]) -> None:
        """Cells rows (values in CELL_COLUMNS order) and their artifacts rows (run_id, cell, name, npy)."""
        for row in cells:
            cursor.execute(self._sql(
                f"INSERT INTO cells ({', '.join(CELL_COLUMNS)}) VALUES ({', '.join('?' for _ in CELL_COLUMNS)})"), row)
        if artifacts:
            cursor.executemany(self._sql("INSERT INTO artifacts (run_id, cell, name, npy) VALUES (?, ?, ?, ?)"),
                               artifacts)

    def _run_row(self, run_id: str) -> dict[str, Any]:
        """The run's row as stored, by column; a run not here is bad input."""
        rows = self._records("SELECT * FROM runs WHERE run_id = ?", (run_id,))
        if not rows:
            raise UserError(f"run {run_id!r} is not in {self.location}")
        return rows[0]

    # -- copying between stores (aebench push) -------------------------------------------------------------------------

    def copy_of_run(self, run_id: str) -> RunCopy:
        """Every stored row of the run, as it is stored."""
        run = self._run_row(run_id)
        cells = self._records(f"SELECT {', '.join(CELL_COLUMNS)} FROM cells WHERE run_id = ? ORDER BY cell", (run_id,))
        artifacts = [(cell, name, bytes(npy)) for cell, name, npy in
                     self._rows("SELECT cell, name, npy FROM artifacts WHERE run_id = ? ORDER BY cell, name", (run_id,))]
        return RunCopy({name: run[name] for name in RUN_TABLE_COLUMNS}, cells, artifacts)

    def receive_run(self, copy: RunCopy) -> int:
        """Append a run copied from another store, in one transaction; returns how many cells were new here.

        Idempotent: a run already here gets only the cells it lacks (it was pushed before a resumed part ran), and
        its runs row the source's later finish (never an earlier one: pushing an old copy undoes nothing). A cell
        already here is never written again, except a failed or timed-out one that ``--retry-failed`` replaced in
        the source (its new result names it in ``info.earlier_attempt``); any other difference, in a cell or in
        what the run is (its start or matrix), refuses the push: a store holds one truth per cell."""
        run_id = copy.run["run_id"]
        with self._transaction() as cursor:
            self._lock_run(cursor, run_id)
            cursor.execute(self._sql("SELECT started_at, matrix_json, finished_at FROM runs WHERE run_id = ?"),
                           (run_id,))
            stored = cursor.fetchone()
            if stored is None:
                cursor.execute(self._sql(
                    f"INSERT INTO runs ({', '.join(RUN_TABLE_COLUMNS)}) VALUES ({', '.join('?' for _ in RUN_TABLE_COLUMNS)})"),
                    tuple(copy.run[name] for name in RUN_TABLE_COLUMNS))
            else:
                started_at, matrix_json, finished_at = stored
                if (started_at, matrix_json) != (copy.run["started_at"], copy.run["matrix_json"]):
                    raise UserError(f"run {run_id} in {self.location} is another run than the one pushed (it started "
                                    f"at {started_at}, the copy at {copy.run['started_at']}, or their matrices "
                                    "differ): allowed a push of the same run again")
                if copy.run["finished_at"] and (finished_at is None or copy.run["finished_at"] > finished_at):
                    changing = ("finished_at", "status", "wall_s", "summary_json", "heartbeat_at", "host", "pid",
                                "invocation_started_at")
                    cursor.execute(self._sql(f"UPDATE runs SET {', '.join(f'{name} = ?' for name in changing)}"
                                             " WHERE run_id = ?"), (*(copy.run[name] for name in changing), run_id))
            cursor.execute(self._sql("SELECT cell, key, status, info_json FROM cells WHERE run_id = ?"), (run_id,))
            here = {cell: (key, status, info) for cell, key, status, info in cursor.fetchall()}
            pushed = {row["cell"]: (row["key"], row["status"], row["info_json"]) for row in copy.cells}
            both = [cell for cell in pushed if cell in here]
            retried = {cell for cell in both if _retries(here[cell], pushed[cell])}
            # An older copy's failure of a cell retried here since: already replaced, nothing to refuse or to copy.
            settled = retried | {cell for cell in both if _retries(pushed[cell], here[cell])}
            for row in copy.cells:
                if row["cell"] in here and row["cell"] not in settled and \
                        here[row["cell"]][:2] != (row["key"], row["status"]):
                    raise UserError(
                        f"run {run_id} cell {row['cell']} differs in {self.location} ({here[row['cell']][1]} "
                        f"{here[row['cell']][0]}) from the copy pushed ({row['status']} {row['key']}): allowed a push "
                        "of the same run again; a store holds one result per cell")
            for cell in retried:  # the failure is not forgotten: the new result names it
                cursor.execute(self._sql("DELETE FROM artifacts WHERE run_id = ? AND cell = ?"), (run_id, cell))
                cursor.execute(self._sql("DELETE FROM cells WHERE run_id = ? AND cell = ?"), (run_id, cell))
            new = [row for row in copy.cells if row["cell"] not in here or row["cell"] in retried]
            fresh = {row["cell"] for row in new}
            self._insert_cell_rows(cursor, [tuple(row[name] for name in CELL_COLUMNS) for row in new],
                                   [(run_id, cell, name, npy) for cell, name, npy in copy.artifacts if cell in fresh])
        return len(new)

    def _lock_run(self, cursor: Any, run_id: str) -> None:
        """Hold off every other writer of the run's cells (a push, a retried cell) until this transaction ends, taken
        before the transaction's first read: each backend says how (a PostgreSQL advisory lock, SQLite's write lock)."""

    # -- reading -------------------------------------------------------------------------------------------------------

    def resolve_run(self, ref: str | None = None, *, complete: bool = False) -> str:
        """A run id, a unique prefix of one, or None / 'latest' for the newest run (the newest complete one with
        ``complete``: a run still running, interrupted or dead is no side of a comparison unless named)."""
        if ref in (None, "latest"):
            where = "WHERE status = 'complete' " if complete else ""
            rows = self._rows(f"SELECT run_id FROM runs {where}ORDER BY started_at DESC, run_id DESC LIMIT 1")
            if not rows:
                what = "no complete run" if complete else "no runs"
                raise UserError(f"the store {self.location} holds {what} yet: run 'aebench run' first")
            return rows[0][0]
        rows = self._rows("SELECT run_id FROM runs WHERE run_id LIKE ? ESCAPE '\\' ORDER BY run_id", (_like_prefix(ref),))
        if len(rows) != 1:
            what = "no run" if not rows else f"{len(rows)} runs ({', '.join(r[0] for r in rows[:5])})"
            raise UserError(f"run {ref!r} matches {what} in {self.location}: 'aebench list' shows the run ids")
        return rows[0][0]

    def run_record(self, run_id: str) -> dict[str, Any]:
        record = self._run_row(run_id)
        record["stored_status"] = record["status"]  # what a compare-and-set on the row (claim_run) must match
        record["status"] = run_status(record)
        record["matrix"] = json.loads(record.pop("matrix_json"))
        record["environment"] = json.loads(record.pop("environment_json"))
        record["summary"] = json.loads(record.pop("summary_json") or "{}")
        record["argv"] = json.loads(record["argv"])
        return record

    def runs_frame(self) -> pd.DataFrame:
        """One row per run with its cell counts, newest last."""
        # CASE, not SUM(c.status = 'ok'): PostgreSQL does not sum booleans. GROUP BY the key only: both backends
        # know every other runs column follows from it.
        query = """
            SELECT r.run_id, r.started_at, r.status, r.matrix_name, r.git_commit, r.git_dirty, r.machine_id, r.wall_s,
                   r.host, r.pid, r.heartbeat_at, r.invocation_started_at,
                   SUM(CASE WHEN c.status = 'ok' THEN 1 ELSE 0 END) AS ok,
                   SUM(CASE WHEN c.status IN ('failed', 'timeout') THEN 1 ELSE 0 END) AS failed,
                   SUM(CASE WHEN c.status = 'skipped' THEN 1 ELSE 0 END) AS skipped, COUNT(c.cell) AS cells
            FROM runs r LEFT JOIN cells c ON c.run_id = r.run_id
            GROUP BY r.run_id ORDER BY r.started_at, r.run_id"""
        frame = self._frame(query)
        for column in ("ok", "failed", "skipped", "cells"):
            frame[column] = pd.to_numeric(frame[column]).fillna(0).astype(int)
        frame["git_dirty"] = pd.to_numeric(frame["git_dirty"]).astype("Int64")
        frame["wall_s"] = pd.to_numeric(frame["wall_s"], errors="coerce").astype(float)  # NULL while running
        frame["status"] = [run_status(row) for row in frame.to_dict(orient="records")]
        return frame.drop(columns=["host", "pid", "heartbeat_at", "invocation_started_at"])

    def results(self, run_id: str, *, with_artifacts: bool = True) -> list[CellResult]:
        """The run's cells in order. ``with_artifacts=False`` skips the arrays (image grids, latency samples): what
        only needs the figures should not read every blob."""
        rows = self._rows(
            "SELECT cell_json, status, exit_code, error, stderr_tail, duration_s, metrics_json, info_json, cell"
            " FROM cells WHERE run_id = ? ORDER BY cell", (run_id,)
        )
        artifacts = self.artifacts(run_id) if with_artifacts else {}
        return [
            CellResult(cell=Cell.from_dict(json.loads(cell_json)), status=status, exit_code=exit_code, error=error,
                       stderr_tail=stderr_tail, duration_s=duration, metrics=json.loads(metrics), info=json.loads(info),
                       artifacts=artifacts.get(index, {}))
            for cell_json, status, exit_code, error, stderr_tail, duration, metrics, info, index in rows
        ]

    def artifacts(self, run_id: str, names: Sequence[str] | None = None) -> dict[int, dict[str, np.ndarray]]:
        """The run's arrays by cell index; ``names`` reads only those (an image grid is not decoded to get a latency)."""
        query = "SELECT cell, name, npy FROM artifacts WHERE run_id = ?"
        parameters: list[Any] = [run_id]
        if names is not None:
            query += f" AND name IN ({', '.join('?' for _ in names)})"
            parameters += list(names)
        found: dict[int, dict[str, np.ndarray]] = {}
        for cell, name, blob in self._rows(query, parameters):
            found.setdefault(cell, {})[name] = _from_npy(bytes(blob))
        return found

    def frame(self, run_ids: Sequence[str]) -> pd.DataFrame:
        """The flat table: one row per cell of the given runs, with run columns first."""
        return pd.concat([flat_frame(self.run_record(run_id), self.results(run_id, with_artifacts=False))
                          for run_id in run_ids] or [pd.DataFrame()], ignore_index=True)


def _like_prefix(ref: str) -> str:
    """A LIKE pattern for the run ids that start with ``ref``, its own % and _ taken literally."""
    return ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _retries(old: tuple[str, str, str | None], new: tuple[str, str, str | None]) -> bool:
    """Whether the cell row ``new`` is a ``--retry-failed`` rerun of ``old``, both (key, status, info_json): the same
    cell, ``old`` failed or timed out, ``new`` another result that names the earlier attempt."""
    (key, status, info), (new_key, _, new_info) = old, new
    if key != new_key or status not in ("failed", "timeout") or info == new_info:
        return False
    return "earlier_attempt" in json.loads(new_info or "{}")


def run_status(record: Mapping[str, Any], now: datetime | None = None) -> str:
    """The run's status as stored, except that a ``running`` run whose runner is gone is ``abandoned`` (killed with
    SIGKILL, by the OOM killer or a power cut: nothing could record it). On the runner's own host the pid tells
    (a pid reused by a process started after the run does not count); elsewhere, a heartbeat older than
    ``STALE_AFTER_S``. A run from before runners recorded themselves stays ``running``: nothing tells."""
    if record.get("status") != "running" or not record.get("host"):
        return str(record.get("status"))
    # The runner of the latest invocation: a resumed run's runner started after the run did.
    started = datetime.fromisoformat(str(record.get("invocation_started_at") or record["started_at"]))
    if record["host"] == socket.gethostname():
        try:
            alive = psutil.Process(int(record["pid"])).create_time() <= started.timestamp() + 1
        except psutil.AccessDenied:
            alive = True  # another user's process: it exists, and nothing more can be told
        except (psutil.NoSuchProcess, TypeError, ValueError):
            alive = False
        return "running" if alive else "abandoned"
    beat = datetime.fromisoformat(str(record.get("heartbeat_at") or record["started_at"]))
    age = ((now or datetime.now(timezone.utc)) - beat).total_seconds()
    return "running" if age <= STALE_AFTER_S else "abandoned"


def flat_frame(record: Mapping[str, Any], results: Sequence[CellResult]) -> pd.DataFrame:
    """One run's flat table from its record and results (already read): one row per cell, run columns first."""
    prefix = {column: record.get(column) for column in RUN_COLUMNS}
    frame = pd.DataFrame([{**prefix, **result.flat()} for result in results])
    if not frame.empty:
        frame["git_dirty"] = frame["git_dirty"].astype(bool)
    return frame


def timed_on(frame: pd.DataFrame) -> pd.Series:
    """The machine that timed each row of a flat table: its cell's own ``info.machine_id`` (a cluster's node), else
    its run's (the machine the run started on, all there is for a run older than per-cell fingerprints)."""
    run = frame["machine_id"].astype(object)
    if "info.machine_id" not in frame.columns:
        return run
    own = frame["info.machine_id"].astype(object)
    return own.where(own.notna() & (own.astype(str) != ""), run)


def without_contaminated_speed(frame: pd.DataFrame) -> pd.DataFrame:
    """The flat table with every speed figure of a contaminated cell blanked (``speed.contaminated = 1``: it ran
    beside another benchmark, ``--allow-concurrent``), so that no verdict, noise estimate or ratio uses it. Its
    quality figures stay: the machine's load does not change them."""
    if frame.empty or CONTAMINATED not in frame.columns:
        return frame
    dirty = frame[CONTAMINATED].map(flag_is_set).astype(bool)
    if not dirty.any():
        return frame
    # The figures to compare go; the load measurements and the flag, the evidence, stay.
    speed = [column for column in frame.columns if column.startswith("speed.")
             and (metric := REGISTRY.find(column)) is not None and metric.better is not None]
    frame = frame.copy()
    frame.loc[dirty, speed] = np.nan
    return frame
