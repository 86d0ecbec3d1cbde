"""Shared fixtures: one embedded PostgreSQL per test session, a fresh migrated database per test,
and a real Redis under a per-test key prefix: the one on 127.0.0.1:6379 (TEST_REDIS_URL) where it
answers, else a throwaway redis-server for the session (pilito_pipeline_tests/services.py)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

os.environ.setdefault("LC_ALL", "C.UTF-8")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from hypothesis import HealthCheck  # noqa: E402
from hypothesis import settings as hypothesis_settings  # noqa: E402

from pilito_pipeline.store.migrate import migrate  # noqa: E402
from pilito_pipeline.store.server import embedded_server_uri, stop_embedded_server  # noqa: E402
from pilito_pipeline_tests.services import put_redis_server_on_path, redis_answers, throwaway_redis  # noqa: E402

put_redis_server_on_path()

TEMPLATE_DATABASE = "pilito_template"

# Property tests check properties, not speed: Hypothesis' default 200 ms deadline per example (and its
# too-slow health check) would turn a loaded machine's slowness into failures.
hypothesis_settings.register_profile("pilito", deadline=None, suppress_health_check=[HealthCheck.too_slow])
hypothesis_settings.load_profile("pilito")


@pytest.fixture(scope="session")
def postgres_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URI of the session's server ('postgres' database); `TEST_DATABASE_URL` overrides the embedded one."""
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        yield external
        return
    data_dir = Path(tmp_path_factory.mktemp("embedded-pg"))
    root = embedded_server_uri(data_dir, database="postgres")
    with psycopg.connect(root, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DATABASE}"')
        conn.execute(f'CREATE DATABASE "{TEMPLATE_DATABASE}"')
    migrate(_with_database(root, TEMPLATE_DATABASE))
    yield root
    stop_embedded_server(data_dir)


@pytest.fixture
def database_url(postgres_root: str) -> Iterator[str]:
    """A fresh, fully migrated database for one test (cloned from a template: milliseconds)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_root, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DATABASE}"')
    yield _with_database(postgres_root, name)
    with psycopg.connect(postgres_root, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real Redis; tests namespace their keys with `redis_prefix`. The one at TEST_REDIS_URL
    (default 127.0.0.1:6379) where it answers; else a throwaway one, started for this session and
    stopped after it."""
    url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    if redis_answers(url):
        yield url
        return
    with throwaway_redis(tmp_path_factory.mktemp("redis")) as throwaway:
        yield throwaway


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    import redis

    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)


def _with_database(uri: str, database: str) -> str:
    """Swap the database name in a libpq URI (`postgresql://u:p@host/db?params`)."""
    head, sep, query = uri.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{database}{sep}{query}"
