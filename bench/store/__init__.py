"""Where results live: an embedded SQLite file by default, or a shared PostgreSQL database for a fleet of machines.

``open_store`` picks the backend from where the store is: a ``postgresql://`` URL, or a file path. Both hold the same
schema and read and write through the same queries (aebench.store.base).
"""

from __future__ import annotations

from pathlib import Path

from aebench.store.base import (DEFAULT_STORE, HEARTBEAT_S, REPORTS_DIR, RUN_COLUMNS, SCHEMA_VERSION, STALE_AFTER_S,
                                RunCopy, Store, flat_frame, new_run_id, run_status, timed_on, utc_now,
                                without_contaminated_speed)

__all__ = ["DEFAULT_STORE", "HEARTBEAT_S", "REPORTS_DIR", "RUN_COLUMNS", "SCHEMA_VERSION", "STALE_AFTER_S", "RunCopy",
           "Store", "flat_frame", "is_server_url", "new_run_id", "open_store", "run_status", "store_key", "timed_on",
           "utc_now", "without_contaminated_speed"]


def is_server_url(location: str | Path) -> bool:
    """Whether ``location`` names a PostgreSQL server (``postgresql://`` or ``postgres://``), not a file."""
    return isinstance(location, str) and location.split("://", 1)[0].lower() in ("postgresql", "postgres") \
        and "://" in location


def store_key(location: str | Path) -> str:
    """One spelling per store, to tell whether two locations are the same store: a URL as given, a path resolved."""
    return str(location) if is_server_url(location) else str(Path(location).resolve())


def open_store(location: str | Path, *, create: bool = True) -> Store:
    """The store at ``location``: a PostgreSQL URL, or a SQLite file path (created when missing, unless
    ``create=False``, which makes a missing store a UserError)."""
    if is_server_url(location):
        from aebench.store.postgres import PostgresStore  # psycopg only for those who use a server

        return PostgresStore(str(location), create=create)
    from aebench.store.sqlite import SqliteStore

    return SqliteStore(location, create=create)
