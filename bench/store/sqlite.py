"""The embedded default: a result store in one SQLite file, in WAL mode so readers never block the writer."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aebench.errors import UserError
from aebench.store.base import SCHEMA, SCHEMA_VERSION, Store

BUSY_TIMEOUT_S = 30.0  # another writer (a second process, the heartbeat thread) holds the store: wait this long

# Version 1 -> 2: the runner's host and pid and a heartbeat, so that a run whose runner died shows as abandoned.
MIGRATIONS = {
    1: "ALTER TABLE runs ADD COLUMN host TEXT; ALTER TABLE runs ADD COLUMN pid INTEGER; "
       "ALTER TABLE runs ADD COLUMN heartbeat_at TEXT; ALTER TABLE runs ADD COLUMN invocation_started_at TEXT;",
}


class SqliteStore(Store):
    Error = sqlite3.Error

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        self.path = Path(path)
        self.location = str(self.path)
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
            self._prepare_schema(create)
        except sqlite3.OperationalError as error:  # locked past the timeout, unreadable, a read-only file, a full disk
            raise UserError(f"the store {self.path} cannot be opened ({error}): allowed a store file this user can "
                            "read and write, not in use by an older aebench") from None
        except sqlite3.DatabaseError as error:
            raise UserError(f"{self.path} is not an aebench result store ({error}): pass --store PATH to another file") from None

    def reopen(self) -> SqliteStore:
        return SqliteStore(self.path, create=False)

    @property
    def local_folder(self) -> Path:
        return self.path.absolute().parent

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        with self._db:  # commits, or rolls back on an exception
            cursor = self._db.cursor()
            try:
                yield cursor
            finally:
                cursor.close()

    def _lock_run(self, cursor: sqlite3.Cursor, run_id: str) -> None:
        # Take the write lock before the transaction's first read: two pushes of one run must not both see it absent.
        cursor.execute("BEGIN IMMEDIATE")

    def _prepare_schema(self, create: bool) -> None:
        """Create the schema in an empty file (only with ``create``: a reader writes nothing), upgrade an older one in
        place through every migration after it (every row kept), refuse a newer one. Both under one write lock,
        re-read inside it: two processes opening one old store at once upgrade it once."""
        version = self._schema_version()
        if version == SCHEMA_VERSION:
            return
        if version is None and not create:
            raise UserError(f"the store {self.path} holds no aebench results yet: run 'aebench run --store "
                            f"{self.path}' first")
        if version is not None and version not in MIGRATIONS:
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
            steps = [SCHEMA] if version is None else [MIGRATIONS[v] for v in range(version, SCHEMA_VERSION)]
            for statement in filter(str.strip, ";".join(steps).split(";")):
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
        if row is None:
            raise sqlite3.DatabaseError("its meta table names no schema version")
        return int(row[0])
