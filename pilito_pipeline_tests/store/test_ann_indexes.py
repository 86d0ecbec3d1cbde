"""Per-tenant partial HNSW indexes: build, registry, idempotence, concurrency, crash repair, hysteresis."""

from __future__ import annotations

import threading

import numpy as np
import psycopg
import pytest
from pgvector import HalfVector

from pilito_pipeline.store.ann_indexes import (
    ann_index_names,
    drop_tenant_ann_index,
    ensure_tenant_ann_index,
    tenant_ann_index_ready,
    tenants_needing_ann_index,
)
from pilito_pipeline.store.db import connect
from pilito_pipeline_tests.waiting import wait_for


def waits_on_lock(url: str, pid: int) -> bool:
    with connect(url) as conn:
        row = conn.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return row is not None and row["wait_event_type"] == "Lock"


def add_chunks(url: str, tenant: str, count: int, *, start: int = 0, seed: int = 0) -> None:
    """`count` searchable chunks (plus one parent row, which must not count) with random embeddings."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, 384)).astype(np.float32)
    with connect(url) as conn, conn.cursor() as cur, cur.copy(
        "COPY tenant_knowledge (tenant_id, chunk_type, source_id, chunk_index, total_chunks,"
        " is_parent, full_text, search_terms, content_hash, full_embedding, tldr_embedding)"
        " FROM STDIN (FORMAT BINARY)"
    ) as copy:
        copy.set_types(["text", "text", "text", "int4", "int4", "bool", "text", "text[]", "text",
                        "halfvec", "halfvec"])
        if start == 0:
            copy.write_row((tenant, "website", "parent", 0, 1, True, "parent", [], "h", None, None))
        for n in range(start, start + count):
            copy.write_row((tenant, "website", f"p{n}", 0, 1, False, f"chunk {n}", ["chunk", str(n)], "h",
                            HalfVector(vectors[n - start]), HalfVector(vectors[n - start])))


def delete_chunks(url: str, tenant: str, keep: int) -> None:
    with connect(url) as conn:
        conn.execute("DELETE FROM tenant_knowledge WHERE tenant_id = %s AND NOT is_parent AND id NOT IN"
                     " (SELECT id FROM tenant_knowledge WHERE tenant_id = %s AND NOT is_parent ORDER BY id LIMIT %s)",
                     (tenant, tenant, keep))


def indexes_of(url: str, tenant: str) -> dict[str, dict]:
    """name -> {valid, definition} of the tenant's ANN indexes that exist."""
    with connect(url) as conn:
        rows = conn.execute(
            "SELECT c.relname, i.indisvalid, pg_get_indexdef(i.indexrelid) AS definition"
            " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = ANY(%s)",
            (list(ann_index_names(tenant)),)).fetchall()
    return {r["relname"]: {"valid": r["indisvalid"], "definition": r["definition"]} for r in rows}


def registry(url: str) -> dict[str, dict]:
    with connect(url) as conn:
        return {r["tenant_id"]: r for r in conn.execute("SELECT * FROM tenant_ann_indexes")}


def test_index_names_are_deterministic_short_and_distinct() -> None:
    names = ann_index_names("shop.example-1_A")
    assert names == ann_index_names("shop.example-1_A")
    assert len(names) == 3 and names[0].endswith("_full") and names[1].endswith("_tldr")
    assert names[2].endswith("_latent_terms")
    assert all(len(name) < 63 and name.isascii() and name == name.lower() for name in names)
    assert set(names).isdisjoint(ann_index_names("shop.example-1_a"))
    assert len(ann_index_names("x" * 64)[0]) == len(names[0])


@pytest.mark.parametrize("bad", ["", "x" * 65, "a'b", 'a"b', "a b", "t;DROP TABLE x", "تهران"])
def test_unsafe_tenant_ids_are_refused(database_url: str, bad: str) -> None:
    with pytest.raises(ValueError, match="invalid tenant id"):
        ann_index_names(bad)
    with pytest.raises(ValueError, match="invalid tenant id"):
        ensure_tenant_ann_index(database_url, bad, min_chunks=1)


def test_connection_must_be_autocommit(database_url: str) -> None:
    with connect(database_url) as conn, pytest.raises(ValueError, match="autocommit"):
        ensure_tenant_ann_index(conn, "big", min_chunks=10)


def test_small_tenant_gets_nothing(database_url: str) -> None:
    add_chunks(database_url, "small", 30)
    assert ensure_tenant_ann_index(database_url, "small", min_chunks=31) is None
    assert indexes_of(database_url, "small") == {} and registry(database_url) == {}


def test_builds_partial_indexes_registers_them_and_is_idempotent(database_url: str) -> None:
    add_chunks(database_url, "big", 60)
    add_chunks(database_url, "other", 60, seed=1)
    name = ensure_tenant_ann_index(database_url, "big", min_chunks=60)
    assert name == ann_index_names("big")[0]
    built = indexes_of(database_url, "big")
    assert set(built) == set(ann_index_names("big"))
    operators = ("full_embedding halfvec_cosine_ops", "tldr_embedding halfvec_cosine_ops", "latent_terms sparsevec_ip_ops")
    for index, column in zip(ann_index_names("big"), operators, strict=True):
        definition = built[index]["definition"]
        assert built[index]["valid"]
        assert f"USING hnsw ({column})" in definition
        assert "WHERE ((tenant_id = 'big'::text) AND (NOT is_parent))" in definition
    entry = registry(database_url)["big"]
    assert entry["index_names"] == list(ann_index_names("big")) and entry["chunk_count_at_build"] == 60
    with connect(database_url) as conn:
        assert tenant_ann_index_ready(conn, "big") and not tenant_ann_index_ready(conn, "other")

    with connect(database_url, autocommit=True) as conn:  # a caller's connection works too
        assert ensure_tenant_ann_index(conn, "big", min_chunks=60) == name
        assert not conn.info.transaction_status  # left idle
    assert registry(database_url)["big"]["built_at"] == entry["built_at"]  # nothing rewritten
    assert indexes_of(database_url, "other") == {}


def test_concurrent_calls_build_each_index_once(database_url: str) -> None:
    add_chunks(database_url, "big", 400)
    results: list[str | None] = []
    errors: list[Exception] = []
    start = threading.Barrier(4)

    def call() -> None:
        start.wait()
        try:
            results.append(ensure_tenant_ann_index(database_url, "big", min_chunks=100))
        except Exception as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    # The builder returns the name; a caller that found the build under way may answer None (not ready yet).
    assert ann_index_names("big")[0] in results and set(results) <= {ann_index_names("big")[0], None}
    assert all(state["valid"] for state in indexes_of(database_url, "big").values())
    assert len(indexes_of(database_url, "big")) == 3 and list(registry(database_url)) == ["big"]


def test_invalid_index_left_by_a_cancelled_build_is_rebuilt(database_url: str) -> None:
    add_chunks(database_url, "big", 60)
    full_name = ann_index_names("big")[0]
    # A writer's open transaction makes CREATE INDEX CONCURRENTLY wait after it has catalogued the
    # index; cancelling it then leaves the index INVALID, as a crash would. The cancel is sent once
    # the build is seen waiting with its index catalogued (a state, not a timer).
    cancelled: list[Exception] = []
    with connect(database_url) as writer:
        writer.execute("UPDATE tenant_knowledge SET word_count = 1 WHERE tenant_id = 'big' AND chunk_index = 0")
        with connect(database_url, autocommit=True) as builder:
            builder_pid = builder.info.backend_pid

            def build() -> None:
                try:
                    builder.execute(f"CREATE INDEX CONCURRENTLY {full_name} ON tenant_knowledge"
                                    " USING hnsw (full_embedding halfvec_cosine_ops) WHERE tenant_id = 'big' AND NOT is_parent")
                except psycopg.errors.QueryCanceled as exc:
                    cancelled.append(exc)

            thread = threading.Thread(target=build)
            thread.start()
            wait_for("the index in the catalog and its build waiting on a lock",
                     lambda: full_name in indexes_of(database_url, "big") and waits_on_lock(database_url, builder_pid),
                     interval=0.05)
            with connect(database_url, autocommit=True) as admin:
                admin.execute("SELECT pg_cancel_backend(%s)", (builder_pid,))
            thread.join(timeout=300)
            assert not thread.is_alive()
        writer.rollback()
    assert len(cancelled) == 1
    assert indexes_of(database_url, "big")[full_name]["valid"] is False

    with connect(database_url) as conn:
        assert tenants_needing_ann_index(conn, min_chunks=1_000) == []  # unregistered and small
        conn.execute("INSERT INTO tenant_ann_indexes VALUES ('big', %s, 60)", (list(ann_index_names("big")),))
        conn.commit()
        assert not tenant_ann_index_ready(conn, "big")  # registered, but an index is INVALID
        assert tenants_needing_ann_index(conn, min_chunks=60) == ["big"]
    assert ensure_tenant_ann_index(database_url, "big", min_chunks=60) == full_name
    assert [state["valid"] for state in indexes_of(database_url, "big").values()] == [True, True, True]
    with connect(database_url) as conn:
        assert tenant_ann_index_ready(conn, "big") and tenants_needing_ann_index(conn, min_chunks=60) == []


def test_hysteresis_keeps_then_drops_a_shrinking_tenant(database_url: str) -> None:
    add_chunks(database_url, "big", 100)
    assert ensure_tenant_ann_index(database_url, "big", min_chunks=100)
    delete_chunks(database_url, "big", keep=60)  # below the threshold, above half of it: kept
    assert ensure_tenant_ann_index(database_url, "big", min_chunks=100) == ann_index_names("big")[0]
    with connect(database_url) as conn:
        assert tenants_needing_ann_index(conn, min_chunks=100) == []
    delete_chunks(database_url, "big", keep=40)  # below half: dropped
    with connect(database_url) as conn:
        assert tenants_needing_ann_index(conn, min_chunks=100) == ["big"]
    assert ensure_tenant_ann_index(database_url, "big", min_chunks=100) is None
    assert indexes_of(database_url, "big") == {} and registry(database_url) == {}
    # A tenant that was never indexed and sits between half and the threshold gets nothing.
    add_chunks(database_url, "big", 30, start=1_000)
    assert ensure_tenant_ann_index(database_url, "big", min_chunks=100) is None
    assert indexes_of(database_url, "big") == {}


def test_tenants_needing_an_index_and_explicit_drop(database_url: str) -> None:
    add_chunks(database_url, "alpha", 80)
    add_chunks(database_url, "beta", 120, seed=1)
    add_chunks(database_url, "tiny", 5, seed=2)
    with connect(database_url) as conn:
        assert tenants_needing_ann_index(conn, min_chunks=50) == ["beta", "alpha"]  # largest first
    ensure_tenant_ann_index(database_url, "beta", min_chunks=50)
    with connect(database_url) as conn:
        assert tenants_needing_ann_index(conn, min_chunks=50) == ["alpha"]
    assert drop_tenant_ann_index(database_url, "beta") is True
    assert drop_tenant_ann_index(database_url, "beta") is False
    assert indexes_of(database_url, "beta") == {} and registry(database_url) == {}


def test_a_tenant_registered_before_the_latent_term_index_gets_it(database_url: str) -> None:
    add_chunks(database_url, "big", 60)
    assert ensure_tenant_ann_index(database_url, "big", min_chunks=60)
    latent_index = ann_index_names("big")[2]
    with connect(database_url, autocommit=True) as conn:  # as an older release left it: two indexes
        conn.execute(f"DROP INDEX {latent_index}")
        conn.execute("UPDATE tenant_ann_indexes SET index_names = %s WHERE tenant_id = 'big'",
                     (list(ann_index_names("big")[:2]),))
        assert tenants_needing_ann_index(conn, min_chunks=60) == ["big"]
    assert ensure_tenant_ann_index(database_url, "big", min_chunks=60) == ann_index_names("big")[0]
    assert set(indexes_of(database_url, "big")) == set(ann_index_names("big"))
    assert registry(database_url)["big"]["index_names"] == list(ann_index_names("big"))
