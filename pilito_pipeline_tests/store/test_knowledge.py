from __future__ import annotations

import numpy as np
import psycopg
import pytest

from pilito_pipeline.sparse_vector import SparseVector
from pilito_pipeline.store.checks import (
    chunks_without_live_page,
    embedding_mismatches,
    incomplete_chunk_sets,
    processed_pages_without_chunks,
)
from pilito_pipeline.store.db import connect
from pilito_pipeline.store.knowledge import (
    KnowledgeRow,
    embedding_text,
    PageVersion,
    SourceKey,
    UpsertStats,
    delete_sources,
    load_sources,
    reusable_embeddings,
    store_pages,
    text_digest,
    upsert_sources,
)

MODEL = "test-model"
DIMENSION = 384


def unit_vector(seed: str, dimension: int = DIMENSION) -> np.ndarray:
    rng = np.random.default_rng(int.from_bytes(text_digest(seed).encode()[:8], "big"))
    vector = rng.standard_normal(dimension).astype(np.float32)
    return vector / np.linalg.norm(vector)


def latent_terms(seed: str) -> SparseVector:
    rng = np.random.default_rng(int.from_bytes(text_digest(seed).encode()[:8], "big"))
    return SparseVector.of(rng.choice(16384, 40, replace=False), rng.random(40) + 0.01, 16384)


def make_rows(key: SourceKey, count: int, version: str = "v1", *, with_parent: bool = False) -> list[KnowledgeRow]:
    """`count` chunks of one source; the texts (and so the embeddings) depend on `version`."""
    tenant, chunk_type, source = key
    rows = []
    for index in range(count):
        is_parent = with_parent and index == 0
        text = f"{source} {version} chunk {index} متن فارسی"
        rows.append(
            KnowledgeRow(
                tenant_id=tenant,
                chunk_type=chunk_type,
                source_id=source,
                document_id=f"https://example.com/{source}",
                chunk_index=index,
                total_chunks=count,
                is_parent=is_parent,
                parent_chunk_index=None if is_parent or not with_parent else 0,
                section_title=f"section {version}",
                full_text=text,
                tldr=f"tldr {text}",
                word_count=len(text.split()),
                search_terms=text.split(),
                content_hash=text_digest(text),
                metadata={"url": f"https://example.com/{source}", "version": version},
                embedding_model=None if is_parent else MODEL,
                full_embedding=None if is_parent else unit_vector(text),
                tldr_embedding=None if is_parent else unit_vector("tldr " + text),
                latent_terms=None if is_parent else latent_terms(text),
            )
        )
    return rows


def assert_rows_equal(stored: list[KnowledgeRow], expected: list[KnowledgeRow]) -> None:
    assert [r.chunk_index for r in stored] == [r.chunk_index for r in expected]
    for got, want in zip(stored, expected, strict=True):
        for name in ("full_embedding", "tldr_embedding"):
            a, b = getattr(got, name), getattr(want, name)
            assert (a is None) == (b is None), name
            if a is not None:
                np.testing.assert_allclose(a, b, atol=1e-3)  # halfvec keeps ~3 decimal digits
        a, b = got.latent_terms, want.latent_terms
        assert (a is None) == (b is None)
        if a is not None:  # sparsevec keeps float4: exact
            assert a.dimension == b.dimension
            np.testing.assert_array_equal(a.indices, b.indices)
            np.testing.assert_array_equal(a.values, b.values)
        plain = lambda r: {k: v for k, v in vars(r).items() if not k.endswith("_embedding") and k != "latent_terms"}  # noqa: E731
        assert plain(got) == plain(want)


def row_versions(conn: psycopg.Connection) -> dict[tuple, tuple]:
    """(identity) -> (xmin, updated_at): changes whenever a row is rewritten."""
    rows = conn.execute(
        "SELECT tenant_id, chunk_type, source_id, chunk_index, xmin::text AS xmin, updated_at FROM tenant_knowledge"
    ).fetchall()
    return {(r["tenant_id"], r["chunk_type"], r["source_id"], r["chunk_index"]): (r["xmin"], r["updated_at"]) for r in rows}


A: SourceKey = ("t1", "website", "p1")
B: SourceKey = ("t1", "website", "p2")
OTHER_TENANT: SourceKey = ("t2", "website", "p1")


def test_upsert_then_load_returns_exactly_the_rows(database_url: str) -> None:
    data = {A: make_rows(A, 4, with_parent=True), B: make_rows(B, 2)}
    with connect(database_url) as conn:
        assert upsert_sources(conn, data) == UpsertStats(inserted=6)
        stored = load_sources(conn, [A, B, ("t1", "manual", "missing")])
    assert_rows_equal(stored[A], data[A])
    assert_rows_equal(stored[B], data[B])
    assert stored[("t1", "manual", "missing")] == []


def test_unchanged_rows_are_not_rewritten(database_url: str) -> None:
    data = {A: make_rows(A, 5, with_parent=True), B: make_rows(B, 3)}
    with connect(database_url) as conn:
        upsert_sources(conn, data)
        conn.commit()
        before = row_versions(conn)
        reloaded = load_sources(conn, [A, B])  # what a re-run rebuilds from the store: half precision
        assert upsert_sources(conn, data) == UpsertStats(unchanged=8)
        assert upsert_sources(conn, reloaded) == UpsertStats(unchanged=8)
        conn.commit()
        assert row_versions(conn) == before


def test_changed_and_vanished_chunks_converge(database_url: str) -> None:
    with connect(database_url) as conn:
        upsert_sources(conn, {A: make_rows(A, 5), B: make_rows(B, 3), OTHER_TENANT: make_rows(OTHER_TENANT, 2)})
        before = row_versions(conn)
        shorter = make_rows(A, 5)[:3]  # total_chunks left at 5 so rows 0 and 2 stay identical
        shorter[1] = make_rows(A, 5, "v2")[1]
        stats = upsert_sources(conn, {A: shorter, B: []})
        assert stats == UpsertStats(inserted=0, updated=1, unchanged=2, deleted=2 + 3)
        after = row_versions(conn)
        stored = load_sources(conn, [A, B, OTHER_TENANT])
    assert_rows_equal(stored[A], shorter)
    assert stored[B] == []
    assert len(stored[OTHER_TENANT]) == 2  # same source id, other tenant: untouched
    assert after[(*A, 0)] == before[(*A, 0)] and after[(*A, 1)] != before[(*A, 1)]


def test_changing_only_the_embedding_model_updates_rows(database_url: str) -> None:
    rows = make_rows(A, 2)
    with connect(database_url) as conn:
        upsert_sources(conn, {A: rows})
        for row in rows:
            row.embedding_model = "other-model"
        assert upsert_sources(conn, {A: rows}) == UpsertStats(updated=2)
        assert reusable_embeddings(conn, [A], MODEL) == ({}, {})
        reusable, latent = reusable_embeddings(conn, [A], "other-model")
    # Filed under the text embedded (heading path and text: the SQL computes what `embedding_text` does).
    assert set(reusable) == {text_digest(embedding_text(r)) for r in rows} | {text_digest(r.tldr) for r in rows}
    np.testing.assert_allclose(reusable[text_digest(embedding_text(rows[0]))], rows[0].full_embedding, atol=1e-3)
    assert set(latent) == {text_digest(embedding_text(r)) for r in rows}  # full texts only
    np.testing.assert_array_equal(latent[text_digest(embedding_text(rows[1]))].values, rows[1].latent_terms.values)


def test_changing_only_the_latent_terms_updates_rows(database_url: str) -> None:
    rows = make_rows(A, 2)
    with connect(database_url) as conn:
        upsert_sources(conn, {A: rows})
        rows[1].latent_terms = latent_terms("another reading")
        assert upsert_sources(conn, {A: rows}) == UpsertStats(updated=1, unchanged=1)
        assert_rows_equal(load_sources(conn, [A])[A], rows)
        rows[0].latent_terms = None  # an embedder without a sparse head
        assert upsert_sources(conn, {A: rows}) == UpsertStats(updated=1, unchanged=1)
        assert_rows_equal(load_sources(conn, [A])[A], rows)


def test_delete_sources(database_url: str) -> None:
    with connect(database_url) as conn:
        upsert_sources(conn, {A: make_rows(A, 3), B: make_rows(B, 2), OTHER_TENANT: make_rows(OTHER_TENANT, 1)})
        assert delete_sources(conn, [A, ("t1", "faq", "nothing")]) == 3
        assert delete_sources(conn, []) == 0
        counts = {k: len(v) for k, v in load_sources(conn, [A, B, OTHER_TENANT]).items()}
    assert counts == {A: 0, B: 2, OTHER_TENANT: 1}


def test_a_failing_upsert_writes_nothing(database_url: str) -> None:
    wrong_dimension = make_rows(B, 2)
    wrong_dimension[1].full_embedding = unit_vector("x", 768)
    with connect(database_url) as conn:
        upsert_sources(conn, {A: make_rows(A, 2)})
        conn.commit()
        with pytest.raises(psycopg.errors.DataException, match="expected 384 dimensions"):
            upsert_sources(conn, {A: make_rows(A, 4, "v2"), B: wrong_dimension})
        conn.rollback()
        stored = load_sources(conn, [A, B])
    assert_rows_equal(stored[A], make_rows(A, 2))
    assert stored[B] == []


def test_store_pages_advances_page_state_with_the_data_or_not_at_all(database_url: str) -> None:
    with connect(database_url) as conn:
        website = conn.execute(
            "INSERT INTO websites (tenant_id, url) VALUES ('t1', 'https://example.com') RETURNING id").fetchone()["id"]
        keys = [r["partition_key"] for r in conn.execute(
            "INSERT INTO pages (tenant_id, website_id, url, status, content_hash, document) VALUES"
            " ('t1', %(w)s, 'https://example.com/a', 'fetched', 'h1', '{}'),"
            " ('t1', %(w)s, 'https://example.com/b', 'fetched', 'h1', '{}')"
            " RETURNING partition_key", {"w": website})]
        conn.commit()
        good = {key: PageVersion("t1", "h1", make_rows(("t1", "website", key), 2)) for key in keys}
        bad = make_rows(("t1", "website", keys[1]), 2)
        bad[1].full_embedding = unit_vector("x", 768)
        with pytest.raises(psycopg.errors.DataException):
            store_pages(conn, {keys[0]: good[keys[0]], keys[1]: PageVersion("t1", "h1", bad)}, MODEL)
        conn.rollback()

        def state() -> list[tuple]:
            return [(r["processed_hash"], r["processed_model"], r["chunks"]) for r in conn.execute(
                "SELECT processed_hash, processed_model, (SELECT count(*) FROM tenant_knowledge k"
                " WHERE k.source_id = p.partition_key) AS chunks FROM pages p ORDER BY id")]

        assert state() == [(None, None, 0), (None, None, 0)]
        assert store_pages(conn, good, MODEL).stats == UpsertStats(inserted=4)
        assert state() == [("h1", MODEL, 2), ("h1", MODEL, 2)]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda rows: setattr(rows[0], "source_id", "p9"), "belongs to source"),
        (lambda rows: setattr(rows[1], "chunk_index", 0), "appears twice"),
        (lambda rows: setattr(rows[0], "embedding_model", None), "no embedding_model"),
        (lambda rows: setattr(rows[0], "full_embedding", np.full(DIMENSION, np.nan)), "finite"),
    ],
)
def test_bad_rows_are_refused_before_writing(database_url: str, mutate, message: str) -> None:
    rows = make_rows(A, 2)
    mutate(rows)
    with connect(database_url) as conn, pytest.raises(ValueError, match=message):
        upsert_sources(conn, {A: rows})


def test_health_checks_over_the_table_and_over_a_run(database_url: str) -> None:
    with connect(database_url) as conn:
        website = conn.execute(
            "INSERT INTO websites (tenant_id, url) VALUES ('t1', 'https://example.com') RETURNING id"
        ).fetchone()["id"]
        pages = conn.execute(
            "INSERT INTO pages (tenant_id, website_id, url, status, content_hash, processed_hash, document)"
            " VALUES ('t1', %(w)s, 'https://example.com/a', 'fetched', 'h', 'h', '{}'),"
            "        ('t1', %(w)s, 'https://example.com/b', 'fetched', 'h', 'h', '{}'),"
            "        ('t1', %(w)s, 'https://example.com/c', 'gone', NULL, NULL, NULL)"
            " RETURNING partition_key",
            {"w": website},
        ).fetchall()
        live, empty, gone = (("t1", "website", p["partition_key"]) for p in pages)
        upsert_sources(conn, {live: make_rows(live, 3, with_parent=True), gone: make_rows(gone, 2)})
        upsert_sources(conn, {("t1", "website", "p999999"): make_rows(("t1", "website", "p999999"), 1)})
        upsert_sources(conn, {("t2", "website", live[2]): make_rows(("t2", "website", live[2]), 1)})
        upsert_sources(conn, {("t1", "manual", "m1"): make_rows(("t1", "manual", "m1"), 2)})
        run = [live[2], empty[2]]  # a page run over `live` and `empty`

        for scope in (None, run):
            assert incomplete_chunk_sets(conn, scope) == {}
            assert embedding_mismatches(conn, scope, MODEL, DIMENSION) == {}
        # Gone page, missing page, another tenant's chunks under a t1 page; the run sees none of them
        # (its pages are live and t2 is not its tenant).
        assert chunks_without_live_page(conn, None) == {"t1": 2 + 1, "t2": 1}
        assert chunks_without_live_page(conn, run) == {}
        assert chunks_without_live_page(conn, [gone[2]]) == {"t1": 2}  # a run that includes the gone page
        assert processed_pages_without_chunks(conn, None) == {"t1": 1}  # `empty`
        assert processed_pages_without_chunks(conn, run) == {"t1": 1}
        assert processed_pages_without_chunks(conn, [live[2]]) == {}
        assert embedding_mismatches(conn, None, "new-model", DIMENSION) == {"t1": 2 + 2 + 1 + 2, "t2": 1}
        assert embedding_mismatches(conn, run, "new-model", DIMENSION) == {"t1": 2}

        conn.execute("UPDATE tenant_knowledge SET tldr_embedding = NULL WHERE chunk_type = 'manual'")
        assert embedding_mismatches(conn, None, MODEL, DIMENSION) == {"t1": 2}
        assert embedding_mismatches(conn, run, MODEL, DIMENSION) == {}
        assert embedding_mismatches(conn, None, MODEL, DIMENSION, tldr=False) == {}  # TL;DRs not embedded
        conn.execute("DELETE FROM tenant_knowledge WHERE tenant_id = 't1' AND source_id = %s AND chunk_index = 1", (live[2],))
        assert incomplete_chunk_sets(conn, run) == {"t1": 1}
        conn.execute("UPDATE tenant_knowledge SET total_chunks = 2 WHERE tenant_id = 't1' AND source_id = %s", (live[2],))
        conn.execute("UPDATE tenant_knowledge SET chunk_index = 1 WHERE tenant_id = 't1' AND source_id = %s AND chunk_index = 2", (live[2],))
        assert incomplete_chunk_sets(conn, run) == {}
        conn.execute("UPDATE tenant_knowledge SET total_chunks = 3 WHERE tenant_id = 't1' AND source_id = %s AND chunk_index = 1", (live[2],))
        assert incomplete_chunk_sets(conn, run) == {"t1": 1}
        assert incomplete_chunk_sets(conn, None) == {"t1": 1}
