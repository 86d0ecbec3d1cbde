"""Concurrent and killed writers, in real processes against the real server."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from pilito_pipeline.store.checks import incomplete_chunk_sets
from pilito_pipeline.store.db import connect
from pilito_pipeline.store.knowledge import SourceKey, load_sources, upsert_sources
from pilito_pipeline_tests.store.test_knowledge import assert_rows_equal, make_rows
from pilito_pipeline_tests.waiting import wait_for

SOURCES: list[SourceKey] = [("t1", "website", f"p{i}") for i in range(12)] + [("t2", "faq", "f1")]
VERSIONS = {"long": 6, "short": 3}  # two complete versions of every source


def expected(key: SourceKey, version: str):
    return make_rows(key, VERSIONS[version], version, with_parent=True)


def concurrent_writer(url: str, seed: int, rounds: int, queue: multiprocessing.Queue) -> None:
    """Upsert random overlapping subsets in random versions, then everything in the final version."""
    rng = random.Random(seed)
    errors: list[str] = []
    try:
        with connect(url) as conn:
            for _ in range(rounds):
                chosen = rng.sample(SOURCES, k=rng.randint(3, len(SOURCES)))
                upsert_sources(conn, {k: expected(k, rng.choice(list(VERSIONS))) for k in chosen})
            queue.put(("ready", seed))
            wait_for("the go signal", lambda: os.path.exists(f"{url_token(url)}.go"), interval=0.01)
            upsert_sources(conn, {k: expected(k, "long") for k in rng.sample(SOURCES, k=len(SOURCES))})
    except Exception as exc:  # reported to the test, which fails on any
        errors.append(f"{type(exc).__name__}: {exc}")
    queue.put(("done", errors))


def url_token(url: str) -> str:
    return f"/tmp/pilito-knowledge-{abs(hash(url))}"


@pytest.mark.slow
def test_eight_processes_upserting_overlapping_sources(database_url: str) -> None:
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    workers = [context.Process(target=concurrent_writer, args=(database_url, seed, 6, queue)) for seed in range(8)]
    go_flag = f"{url_token(database_url)}.go"
    try:
        for worker in workers:
            worker.start()
        ready = [queue.get(timeout=300) for _ in workers]
        # Mid-way every source holds one complete version, never a mix of two.
        with connect(database_url) as conn:
            for key, rows in load_sources(conn, SOURCES).items():
                versions = {row.metadata["version"] for row in rows}
                assert len(versions) == 1, key
                assert_rows_equal(rows, expected(key, versions.pop()))
        open(go_flag, "w").close()
        results = [queue.get(timeout=300) for _ in workers]
        for worker in workers:
            worker.join(timeout=300)
    finally:
        if os.path.exists(go_flag):
            os.remove(go_flag)
    assert sorted(r[1] for r in ready) == list(range(8))
    assert [errors for _, errors in results] == [[]] * 8
    assert all(worker.exitcode == 0 for worker in workers)
    with connect(database_url) as conn:
        stored = load_sources(conn, SOURCES)
        assert incomplete_chunk_sets(conn, None) == {}
        deadlocks = conn.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()").fetchone()
        total = conn.execute("SELECT count(*) AS n FROM tenant_knowledge").fetchone()["n"]
    assert deadlocks["deadlocks"] == 0
    assert total == len(SOURCES) * VERSIONS["long"]
    for key in SOURCES:
        assert_rows_equal(stored[key], expected(key, "long"))


KILLED_WRITER = "pilito-killed-writer"


def writer_to_be_killed(url: str, data) -> None:
    with connect(make_conninfo(url, application_name=KILLED_WRITER)) as conn:
        upsert_sources(conn, data)


def test_a_writer_killed_mid_transaction_leaves_nothing_partial(database_url: str) -> None:
    a, b = SOURCES[0], SOURCES[1]
    old = {a: expected(a, "long"), b: expected(b, "long")}
    new = {a: expected(a, "short"), b: expected(b, "short")}
    with connect(database_url) as conn:
        upsert_sources(conn, old)
        conn.commit()
    with psycopg.connect(database_url) as blocker:
        # Hold a stale chunk of `a`: the writer updates every row, then waits to delete this one.
        blocker.execute(
            "SELECT 1 FROM tenant_knowledge WHERE source_id = %s AND chunk_index = 5 FOR UPDATE", (a[2],)
        )
        writer = multiprocessing.get_context("fork").Process(target=writer_to_be_killed, args=(database_url, new))
        writer.start()
        wait_for("the writer waiting on the lock", lambda: _writer_waits_on_lock(database_url), interval=0.01)
        os.kill(writer.pid, signal.SIGKILL)
        writer.join(timeout=300)
        blocker.rollback()
    assert writer.exitcode == -signal.SIGKILL
    wait_for("the writer's backend gone", lambda: not _writer_backend_alive(database_url), interval=0.01)

    with connect(database_url) as conn:
        stored = load_sources(conn, [a, b])
        for key in (a, b):
            assert_rows_equal(stored[key], old[key])
        stats = upsert_sources(conn, new)
        stored = load_sources(conn, [a, b])
    assert (stats.inserted, stats.updated, stats.deleted) == (0, 6, 6)
    for key in (a, b):
        assert_rows_equal(stored[key], new[key])


def _writer_waits_on_lock(url: str) -> bool:
    with psycopg.connect(url) as conn:
        return bool(
            conn.execute(
                "SELECT 1 FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'"
                " AND query LIKE '%%DELETE FROM tenant_knowledge%%'",
                (KILLED_WRITER,),
            ).fetchone()
        )


def _writer_backend_alive(url: str) -> bool:
    with psycopg.connect(url) as conn:
        return bool(
            conn.execute("SELECT 1 FROM pg_stat_activity WHERE application_name = %s", (KILLED_WRITER,)).fetchone()
        )
