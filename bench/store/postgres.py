"""A shared result store on a PostgreSQL server, for a fleet: many machines append to it at once.

The schema, its version check and the append-only rule are SQLite's (aebench.store.base). Connections run in
autocommit mode and every write is one explicit transaction, so a reader never sits idle inside one. Creating the
schema and receiving a pushed run take a transaction-scoped advisory lock: two machines that meet an empty database
at once create the tables once, and two pushes of one run copy each cell once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from aebench.errors import UserError
from aebench.store.base import SCHEMA, SCHEMA_VERSION, Store

CONNECT_TIMEOUT_S = 10
_SCHEMA_LOCK = 0x61656265  # "aebe": the advisory lock that serialises schema creation
# SQLite's REAL is a 64-bit float and its BLOB any bytes; PostgreSQL's REAL is 32-bit, so its names differ.
POSTGRES_SCHEMA = SCHEMA.replace(" REAL", " DOUBLE PRECISION").replace(" BLOB", " BYTEA")


def without_password(url: str) -> str:
    """The URL as messages may show it: any password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class PostgresStore(Store):
    Error = psycopg.Error

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.url = url
        self.location = without_password(url)
        try:
            self._db = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
        except psycopg.Error as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UserError(f"the store {self.location} cannot be opened ({reason}): allowed the URL of a running "
                            "PostgreSQL server and a database this user may write, postgresql://USER@HOST[:PORT]/DB"
                            ) from None
        try:
            self._prepare_schema(create)
        except BaseException:
            self._db.close()
            raise

    def reopen(self) -> PostgresStore:
        return PostgresStore(self.url, create=False)

    def _sql(self, query: str) -> str:
        return query.replace("?", "%s")

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Cursor[Any]]:
        with self._db.transaction(), self._db.cursor() as cursor:
            yield cursor

    def _lock_run(self, cursor: Any, run_id: str) -> None:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (run_id,))

    def _prepare_schema(self, create: bool) -> None:
        with self._transaction() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            cursor.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")
            tables = {row[0] for row in cursor.fetchall()}
            if not tables:
                if not create:
                    raise UserError(f"the store {self.location} holds no aebench results yet: run 'aebench run --store "
                                    f"{self.location}' or 'aebench push RUN --to {self.location}' first")
                for statement in filter(str.strip, POSTGRES_SCHEMA.split(";")):
                    cursor.execute(statement)  # PostgreSQL's DDL is transactional too
                cursor.execute("INSERT INTO meta VALUES ('schema_version', %s)", (str(SCHEMA_VERSION),))
                return
            if "meta" not in tables:
                raise UserError(f"the database {self.location} is not an aebench result store (it has tables but no "
                                "aebench meta table): allowed an empty database or one aebench created")
            cursor.execute("SELECT value FROM meta WHERE key = 'schema_version'")
            row = cursor.fetchone()
            version = int(row[0]) if row else None
        if version != SCHEMA_VERSION:
            raise UserError(f"{self.location} has store schema version {version}; this aebench reads version "
                            f"{SCHEMA_VERSION}: use an aebench of that version, or another database")
