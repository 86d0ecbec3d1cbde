"""Connections to the pipeline's database (pgvector types registered on every connection)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from pgvector.psycopg import register_vector
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from pilito_pipeline.settings import Settings, get_settings
from pilito_pipeline.store.server import embedded_server_uri


def resolve_database_url(settings: Settings | None = None) -> str:
    """`DATABASE_URL`, or the embedded server's URI when none is configured."""
    settings = settings or get_settings()
    if settings.database_url:
        return settings.database_url
    return embedded_server_uri(settings.data_dir)


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection:
    """A new connection with dict rows and the vector/halfvec/sparsevec types registered."""
    conn = psycopg.connect(url, autocommit=autocommit, row_factory=dict_row)
    register_vector(conn)
    return conn


@contextmanager
def transaction(url: str) -> Iterator[psycopg.Connection]:
    """A connection whose work commits on success and rolls back on any error."""
    with connect(url) as conn:
        with conn.transaction():
            yield conn


def open_pool(url: str, *, max_size: int = 8, timeout_seconds: float = 5.0) -> ConnectionPool:
    """A pool for long-lived callers (the retrieval resource): autocommit connections, so every
    `with conn.transaction()` is a real transaction, and bounded waits, so a database that is down
    fails a call within `timeout_seconds` instead of hanging the caller."""
    return ConnectionPool(
        url,
        min_size=1,
        max_size=max_size,
        kwargs={"row_factory": dict_row, "autocommit": True, "connect_timeout": max(1, round(timeout_seconds))},
        configure=register_vector,
        timeout=timeout_seconds,
        open=True,
    )
