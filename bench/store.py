"""The result store: SQLite, append-only. One row per run (an ``aebench run`` invocation), one per cell, and the
cells' arrays (image grids, raw latency samples) as .npy blobs. Rows are never updated once a run is finished, and
nothing is ever overwritten: a rerun is a new run.

Metrics and info are stored as JSON objects of dot-keyed numbers and strings, read back with ``json.loads`` only
(never eval or pickle), and flattened into one pandas row per cell.
"""

from __future__ import annotations

import io
import json
import secrets
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aebench.config import Cell, Matrix
from aebench.errors import UserError
from aebench.results import CellResult

SCHEMA_VERSION = 1
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
    summary_json TEXT
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

RUN_COLUMNS = ("run_id", "started_at", "git_commit", "git_dirty", "machine_id", "matrix_name")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path)
            self._db.execute("PRAGMA foreign_keys = ON")
            version = self._schema_version()
        except sqlite3.DatabaseError as error:
            raise UserError(f"{self.path} is not an aebench result store ({error}): pass --store PATH to another file") from None
        if version is None:
            with self._db:
                self._db.executescript(_SCHEMA)
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif version != SCHEMA_VERSION:
            raise UserError(
                f"{self.path} has store schema version {version}; this aebench reads version {SCHEMA_VERSION}: "
                f"move the file aside (results are kept there) or pass --store PATH to a new file"
            )

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

    def begin_run(self, matrix: Matrix, environment: Mapping[str, Any], argv: Sequence[str], run_id: str | None = None) -> str:
        run_id = run_id or new_run_id()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO runs (run_id, started_at, status, matrix_name, matrix_json, argv, git_commit, git_dirty,"
                " machine_id, environment_json) VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?)",
                (run_id, _now(), matrix.name, json.dumps(matrix.to_dict()), json.dumps(list(argv)),
                 environment.get("git_commit"), int(bool(environment.get("git_dirty"))), environment.get("machine_id"),
                 json.dumps(dict(environment))),
            )
        return run_id

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
                (_now(), status, wall_s, json.dumps(dict(summary)), run_id),
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
        record["matrix"] = json.loads(record.pop("matrix_json"))
        record["environment"] = json.loads(record.pop("environment_json"))
        record["summary"] = json.loads(record.pop("summary_json") or "{}")
        record["argv"] = json.loads(record["argv"])
        return record

    def runs_frame(self) -> pd.DataFrame:
        """One row per run with its cell counts, newest last."""
        query = """
            SELECT r.run_id, r.started_at, r.status, r.matrix_name, r.git_commit, r.git_dirty, r.machine_id, r.wall_s,
                   SUM(c.status = 'ok') AS ok, SUM(c.status IN ('failed', 'timeout')) AS failed,
                   SUM(c.status = 'skipped') AS skipped, COUNT(c.cell) AS cells
            FROM runs r LEFT JOIN cells c ON c.run_id = r.run_id
            GROUP BY r.run_id ORDER BY r.started_at, r.run_id"""
        frame = pd.read_sql_query(query, self._db)
        for column in ("ok", "failed", "skipped", "cells"):
            frame[column] = frame[column].fillna(0).astype(int)
        frame["wall_s"] = pd.to_numeric(frame["wall_s"], errors="coerce")  # NULL (None) while a run is running
        return frame

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


def _insert_result(db: sqlite3.Connection, run_id: str, result: CellResult) -> None:
    db.execute(
        "INSERT INTO cells VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (run_id, result.cell.index, result.cell.key, json.dumps(result.cell.to_dict()), result.status,
         result.exit_code, result.error, result.stderr_tail, result.duration_s,
         json.dumps(dict(result.metrics)), json.dumps(dict(result.info)), _now()),
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
    if frame.empty or "speed.contaminated" not in frame.columns:
        return frame
    dirty = pd.to_numeric(frame["speed.contaminated"], errors="coerce").fillna(0.0) >= 0.5
    if not dirty.any():
        return frame
    speed = [column for column in frame.columns if column.startswith("speed.") and column != "speed.contaminated"]
    frame = frame.copy()
    frame.loc[dirty, speed] = np.nan
    return frame
