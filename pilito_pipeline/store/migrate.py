"""Versioned, idempotent schema migrations applied under an advisory lock.

Each `migrations/NNNN_name.sql` runs once, in order, in its own transaction; `{{EMBEDDING_DIMENSION}}`
in a file is replaced by the configured dimension. Concurrent callers serialise on the lock, so
the webserver, the daemon and every run worker may call `migrate()` at start-up.
"""

from __future__ import annotations

from importlib import resources

import psycopg

from psycopg.rows import dict_row

MIGRATION_LOCK_ID = 0x70_69_6C_69  # "pili"


class SchemaMismatch(RuntimeError):
    """The database was built for another embedding dimension than the one configured."""


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) for every bundled migration, in order."""
    folder = resources.files("pilito_pipeline.store") / "migrations"
    files = sorted(f for f in folder.iterdir() if f.name.endswith(".sql"))
    return [(f.name.removesuffix(".sql"), f.read_text(encoding="utf-8")) for f in files]


def migrate(url: str, *, embedding_dimension: int = 384) -> list[str]:
    """Apply pending migrations; return the versions applied now. Checks the vector dimension."""
    applied_now: list[str] = []
    # A plain connection: the vector types can only be registered once the extension exists.
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in conn.execute("SELECT version FROM schema_migrations")}
            for version, sql in migration_files():
                if version in done:
                    continue
                sql = sql.replace("{{EMBEDDING_DIMENSION}}", str(int(embedding_dimension)))
                with conn.transaction():
                    conn.execute(sql)
                    conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
                applied_now.append(version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_ID,))
        check_embedding_dimension(conn, embedding_dimension)
    return applied_now


def stored_embedding_dimension(conn: psycopg.Connection) -> int | None:
    """The dimension of `tenant_knowledge.full_embedding`, or None before the schema exists."""
    row = conn.execute(
        "SELECT atttypmod FROM pg_attribute"
        " WHERE attrelid = to_regclass('tenant_knowledge') AND attname = 'full_embedding'"
    ).fetchone()
    return int(row["atttypmod"]) if row else None


def check_embedding_dimension(conn: psycopg.Connection, expected: int) -> None:
    stored = stored_embedding_dimension(conn)
    if stored is not None and stored != expected:
        raise SchemaMismatch(
            f"tenant_knowledge stores {stored}-dimensional embeddings but the configured model"
            f" produces {expected}. Point DATABASE_URL at a database built for this model, or"
            f" migrate the embedding columns (see README: 'Changing the embedding model')."
        )
