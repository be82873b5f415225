"""The result store: SQLite, append-only. One row per run (an ``aebench run`` invocation), one per cell, and the
cells' arrays (image grids, raw latency samples) as .npy blobs. Rows are never updated once a run is finished, and
nothing is ever overwritten: a rerun is a new run.

Metrics and info are stored as JSON objects of dot-keyed numbers and strings, read back with ``json.loads`` only
(never eval or pickle), and flattened into one pandas row per cell.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import socket
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil

from aebench.config import Cell, Matrix
from aebench.errors import UserError
from aebench.load import CONTAMINATED
from aebench.metrics import REGISTRY, flag_is_set
from aebench.results import CellResult

SCHEMA_VERSION = 2
DEFAULT_STORE = Path("reports") / "aebench.sqlite"

_SCHEMA = """
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

# Version 1 -> 2: the runner's host and pid and a heartbeat, so that a run whose runner died shows as abandoned.
_MIGRATIONS = {
    1: "ALTER TABLE runs ADD COLUMN host TEXT; ALTER TABLE runs ADD COLUMN pid INTEGER; "
       "ALTER TABLE runs ADD COLUMN heartbeat_at TEXT; ALTER TABLE runs ADD COLUMN invocation_started_at TEXT;",
}
HEARTBEAT_S = 2.0  # how often a runner says it is alive (aebench.session.Heartbeat)
STALE_AFTER_S = 60.0  # a run of another host whose heartbeat is older than this is abandoned
BUSY_TIMEOUT_S = 30.0  # another writer (a second process, the heartbeat thread) holds the store: wait this long

RUN_COLUMNS = ("run_id", "started_at", "git_commit", "git_dirty", "machine_id", "matrix_name")


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


class Store:
    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        self.path = Path(path)
        if not self.path.exists():
            if not create:
                raise UserError(f"no result store at {self.path}: run 'aebench run' first or pass --store PATH")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise UserError(f"the store {self.path} cannot be created ({error.strerror or error}): allowed a "
                                "path in a folder this user can write") from None
        try:
            self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S)
            self._db.execute("PRAGMA foreign_keys = ON")
            self._prepare_schema()
        except sqlite3.OperationalError as error:  # locked past the timeout, unreadable, a read-only file, a full disk
            raise UserError(f"the store {self.path} cannot be opened ({error}): allowed a store file this user can "
                            "read and write, not in use by an older aebench") from None
        except sqlite3.DatabaseError as error:
            raise UserError(f"{self.path} is not an aebench result store ({error}): pass --store PATH to another file") from None

    def _prepare_schema(self) -> None:
        """Create the schema in an empty file, upgrade an older one in place (every row kept), refuse a newer one.
        Both under one write lock, re-read inside it: two processes opening one old store at once upgrade it once."""
        version = self._schema_version()
        if version == SCHEMA_VERSION:
            return
        if version is not None and version not in _MIGRATIONS:
            raise UserError(
                f"{self.path} has store schema version {version}; this aebench reads version {SCHEMA_VERSION}: "
                f"move the file aside (results are kept there) or pass --store PATH to a new file"
            )
        # WAL: readers never block the writer, and a second writer waits (busy timeout) instead of failing. Set outside
        # the transaction, as SQLite requires; it stays with the file.
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("BEGIN IMMEDIATE")
        try:
            version = self._schema_version()
            statements = {None: _SCHEMA, SCHEMA_VERSION: ""}.get(version, _MIGRATIONS.get(version or 0, ""))
            for statement in filter(str.strip, statements.split(";")):
                self._db.execute(statement)  # SQLite's DDL is transactional: a crash leaves the old version whole
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            self._db.commit()
        except BaseException:
            self._db.rollback()
            raise

    def _schema_version(self) -> int | None:
        tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            return None
        if "meta" not in tables:
            raise sqlite3.DatabaseError("it has tables but no aebench meta table")
        row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(row[0]) if row else None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._db:
            yield self._db

    # -- writing -------------------------------------------------------------------------------------------------------

    def begin_run(self, matrix: Matrix, environment: Mapping[str, Any], argv: Sequence[str], run_id: str | None = None,
                  started_at: str | None = None) -> str:
        run_id = run_id or new_run_id()
        now = started_at or utc_now()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO runs (run_id, started_at, status, matrix_name, matrix_json, argv, git_commit, git_dirty,"
                " machine_id, environment_json, host, pid, heartbeat_at, invocation_started_at)"
                " VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, now, matrix.name, json.dumps(matrix.to_dict()), json.dumps(list(argv)),
                 environment.get("git_commit"), int(bool(environment.get("git_dirty"))), environment.get("machine_id"),
                 json.dumps(dict(environment)), socket.gethostname(), os.getpid(), now, now),
            )
        return run_id

    def claim_run(self, run_id: str) -> str:
        """A resumed run's runner is this process now: its host, pid and heartbeat replace the earlier runner's, and
        this invocation starts now. Returns that time."""
        now = utc_now()
        with self._transaction() as db:
            db.execute("UPDATE runs SET status = 'running', host = ?, pid = ?, heartbeat_at = ?, invocation_started_at = ?"
                       " WHERE run_id = ?", (socket.gethostname(), os.getpid(), now, now, run_id))
        return now

    def abandoned_wall_s(self, record: Mapping[str, Any]) -> float:
        """How long the last invocation of an abandoned run (its ``run_record``) ran before it died: from its start to
        its last sign of life, the later of its last heartbeat and its last stored cell. A lower bound, so the run's
        summary never counts cells without the time they took."""
        run_id = record["run_id"]
        began = record.get("invocation_started_at") or record["started_at"]
        last_cell = self._db.execute("SELECT MAX(finished_at) FROM cells WHERE run_id = ? AND finished_at >= ?",
                                     (run_id, began)).fetchone()[0]
        signs = [datetime.fromisoformat(t) for t in (record.get("heartbeat_at"), last_cell) if t]
        return max([0.0] + [(t - datetime.fromisoformat(began)).total_seconds() for t in signs])

    def beat(self, run_id: str) -> None:
        """The runner is alive (see ``run_status``)."""
        with self._transaction() as db:
            db.execute("UPDATE runs SET heartbeat_at = ? WHERE run_id = ?", (utc_now(), run_id))

    def add_result(self, run_id: str, result: CellResult) -> None:
        with self._transaction() as db:
            _insert_result(db, run_id, result)

    def replace_failed_result(self, run_id: str, result: CellResult) -> None:
        """Store a retried cell's new result in place of its failed or timed-out one, keeping what the earlier
        attempt was in ``info.earlier_attempt`` (status, exit code, error): a failure is replaced, never forgotten."""
        row = self._db.execute("SELECT status, exit_code, error FROM cells WHERE run_id = ? AND cell = ?",
                               (run_id, result.cell.index)).fetchone()
        if row is None or row[0] not in ("failed", "timeout"):
            raise ValueError(f"cell {result.cell.index} of run {run_id} has no failed result to replace")
        retried = replace(result, info={**result.info, "earlier_attempt": f"{row[0]} (exit code {row[1]}): {row[2]}"})
        with self._transaction() as db:  # one transaction: a crash leaves the failure or its replacement, never neither
            db.execute("DELETE FROM artifacts WHERE run_id = ? AND cell = ?", (run_id, result.cell.index))
            db.execute("DELETE FROM cells WHERE run_id = ? AND cell = ?", (run_id, result.cell.index))
            _insert_result(db, run_id, retried)

    def finish_run(self, run_id: str, status: str, wall_s: float, summary: Mapping[str, Any]) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE runs SET finished_at = ?, status = ?, wall_s = ?, summary_json = ? WHERE run_id = ?",
                (utc_now(), status, wall_s, json.dumps(dict(summary)), run_id),
            )

    # -- reading -------------------------------------------------------------------------------------------------------

    def resolve_run(self, ref: str | None = None, *, complete: bool = False) -> str:
        """A run id, a unique prefix of one, or None / 'latest' for the newest run (the newest complete one with
        ``complete``: a run still running, interrupted or dead is no side of a comparison unless named)."""
        if ref in (None, "latest"):
            where = "WHERE status = 'complete' " if complete else ""
            row = self._db.execute(f"SELECT run_id FROM runs {where}ORDER BY started_at DESC, run_id DESC LIMIT 1"
                                   ).fetchone()
            if row is None:
                what = "no complete run" if complete else "no runs"
                raise UserError(f"the store {self.path} holds {what} yet: run 'aebench run' first")
            return row[0]
        rows = self._db.execute("SELECT run_id FROM runs WHERE run_id LIKE ? ORDER BY run_id", (ref + "%",)).fetchall()
        if len(rows) != 1:
            what = "no run" if not rows else f"{len(rows)} runs ({', '.join(r[0] for r in rows[:5])})"
            raise UserError(f"run {ref!r} matches {what} in {self.path}: 'aebench list' shows the run ids")
        return rows[0][0]

    def run_record(self, run_id: str) -> dict[str, Any]:
        self._db.row_factory = sqlite3.Row
        try:
            row = self._db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        finally:
            self._db.row_factory = None
        if row is None:
            raise UserError(f"run {run_id!r} is not in {self.path}")
        record = dict(row)
        record["status"] = run_status(record)
        record["matrix"] = json.loads(record.pop("matrix_json"))
        record["environment"] = json.loads(record.pop("environment_json"))
        record["summary"] = json.loads(record.pop("summary_json") or "{}")
        record["argv"] = json.loads(record["argv"])
        return record

    def runs_frame(self) -> pd.DataFrame:
        """One row per run with its cell counts, newest last."""
        query = """
            SELECT r.run_id, r.started_at, r.status, r.matrix_name, r.git_commit, r.git_dirty, r.machine_id, r.wall_s,
                   r.host, r.pid, r.heartbeat_at, r.invocation_started_at, SUM(c.status = 'ok') AS ok, SUM(c.status IN ('failed', 'timeout')) AS failed,
                   SUM(c.status = 'skipped') AS skipped, COUNT(c.cell) AS cells
            FROM runs r LEFT JOIN cells c ON c.run_id = r.run_id
            GROUP BY r.run_id ORDER BY r.started_at, r.run_id"""
        frame = pd.read_sql_query(query, self._db)
        for column in ("ok", "failed", "skipped", "cells"):
            frame[column] = frame[column].fillna(0).astype(int)
        frame["wall_s"] = pd.to_numeric(frame["wall_s"], errors="coerce")  # NULL (None) while a run is running
        frame["status"] = [run_status(row) for row in frame.to_dict(orient="records")]
        return frame.drop(columns=["host", "pid", "heartbeat_at", "invocation_started_at"])

    def results(self, run_id: str, *, with_artifacts: bool = True) -> list[CellResult]:
        """The run's cells in order. ``with_artifacts=False`` skips the arrays (image grids, latency samples): what
        only needs the figures should not read every blob."""
        rows = self._db.execute(
            "SELECT cell_json, status, exit_code, error, stderr_tail, duration_s, metrics_json, info_json, cell"
            " FROM cells WHERE run_id = ? ORDER BY cell", (run_id,)
        ).fetchall()
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
        for cell, name, blob in self._db.execute(query, parameters):
            found.setdefault(cell, {})[name] = _from_npy(blob)
        return found

    def frame(self, run_ids: Sequence[str]) -> pd.DataFrame:
        """The flat table: one row per cell of the given runs, with run columns first."""
        return pd.concat([flat_frame(self.run_record(run_id), self.results(run_id, with_artifacts=False))
                          for run_id in run_ids] or [pd.DataFrame()], ignore_index=True)


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


def _insert_result(db: sqlite3.Connection, run_id: str, result: CellResult) -> None:
    db.execute(
        "INSERT INTO cells VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (run_id, result.cell.index, result.cell.key, json.dumps(result.cell.to_dict()), result.status,
         result.exit_code, result.error, result.stderr_tail, result.duration_s,
         json.dumps(dict(result.metrics)), json.dumps(dict(result.info)), utc_now()),
    )
    db.executemany(
        "INSERT INTO artifacts VALUES (?, ?, ?, ?)",
        [(run_id, result.cell.index, name, _to_npy(array)) for name, array in result.artifacts.items()],
    )


def flat_frame(record: Mapping[str, Any], results: Sequence[CellResult]) -> pd.DataFrame:
    """One run's flat table from its record and results (already read): one row per cell, run columns first."""
    prefix = {column: record.get(column) for column in RUN_COLUMNS}
    frame = pd.DataFrame([{**prefix, **result.flat()} for result in results])
    if not frame.empty:
        frame["git_dirty"] = frame["git_dirty"].astype(bool)
    return frame


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
