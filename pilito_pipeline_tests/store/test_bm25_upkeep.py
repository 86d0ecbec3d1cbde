"""BM25 upkeep (migration 0010) stays exact: after inserts, updates and deletes, through
`upsert_sources` and through plain SQL, the postings and statistics equal a from-scratch
recomputation from `tenant_knowledge`; the migration's rebuild of existing rows too."""

from __future__ import annotations

import random
from importlib import resources

import psycopg

from pilito_pipeline.store.db import connect
from pilito_pipeline.store.knowledge import KnowledgeRow, SourceKey, delete_sources, upsert_sources
from pilito_pipeline_tests.store.test_knowledge import make_rows

VOCABULARY = ["visa", "course", "price", "ielts", "شهریه", "کلاس", "teacher", "online", "exam", "book"]

STORED = """
SELECT p.tenant_id, p.term, p.chunk_type, u.chunk_id, u.tf, u.length
  FROM bm25_postings p, unnest(p.chunk_ids, p.tfs, p.chunk_lengths) AS u(chunk_id, tf, length)
 ORDER BY 1, 2, 3, 4, 5, 6
"""
RECOMPUTED = """
SELECT k.tenant_id, t.term, k.chunk_type, k.id, count(*)::int, cardinality(k.search_terms)
  FROM tenant_knowledge k, unnest(k.search_terms) AS t(term)
 WHERE NOT k.is_parent
 GROUP BY k.tenant_id, t.term, k.chunk_type, k.id, cardinality(k.search_terms)
 ORDER BY 1, 2, 3, 4, 5, 6
"""
STORED_STATS = "SELECT tenant_id, chunk_count, total_length FROM bm25_tenant_stats WHERE chunk_count > 0 ORDER BY 1"
RECOMPUTED_STATS = """
SELECT tenant_id, count(*), sum(cardinality(search_terms)) FROM tenant_knowledge
 WHERE NOT is_parent GROUP BY tenant_id ORDER BY 1
"""
STORED_DF = """
SELECT tenant_id, term, sum(cardinality(chunk_ids)) FROM bm25_postings GROUP BY 1, 2 ORDER BY 1, 2
"""
RECOMPUTED_DF = """
SELECT k.tenant_id, t.term, count(DISTINCT k.id) FROM tenant_knowledge k, unnest(k.search_terms) AS t(term)
 WHERE NOT k.is_parent GROUP BY 1, 2 ORDER BY 1, 2
"""


def assert_exact(conn: psycopg.Connection) -> None:
    def rows(sql: str) -> list[tuple]:
        return [tuple(r.values()) for r in conn.execute(sql).fetchall()]

    assert rows(STORED) == rows(RECOMPUTED)
    assert rows(STORED_STATS) == rows(RECOMPUTED_STATS)
    assert rows(STORED_DF) == rows(RECOMPUTED_DF)
    empty = conn.execute("SELECT count(*) AS n FROM bm25_postings WHERE cardinality(chunk_ids) = 0").fetchone()
    assert empty["n"] == 0


def with_terms(rows: list[KnowledgeRow], rng: random.Random) -> list[KnowledgeRow]:
    """Overlapping terms with repeats, so sources share terms and tf > 1 occurs."""
    for row in rows:
        row.search_terms = [] if row.is_parent else rng.choices(VOCABULARY, k=rng.randint(0, 12))
    return rows


def test_postings_equal_a_recomputation_after_every_kind_of_write(database_url: str) -> None:
    rng = random.Random(5)
    keys: list[SourceKey] = [(tenant, kind, f"s{i}") for tenant in ("t1", "t2") for kind in ("website", "faq")
                             for i in range(4)]
    with connect(database_url) as conn:
        upsert_sources(conn, {k: with_terms(make_rows(k, 5, with_parent=True), rng) for k in keys})
        assert_exact(conn)

        # Changed terms, shorter and longer sources, an emptied source, untouched sources.
        changed = {k: with_terms(make_rows(k, rng.randint(0, 7), "v2", with_parent=True), rng) for k in keys[::2]}
        stats = upsert_sources(conn, changed)
        assert stats.updated and stats.deleted
        assert_exact(conn)

        # The same rows again: nothing written, postings untouched.
        before = conn.execute("SELECT xmin::text AS x, * FROM bm25_postings ORDER BY 2, 3, 4, 5").fetchall()
        assert upsert_sources(conn, changed).written == 0
        assert conn.execute("SELECT xmin::text AS x, * FROM bm25_postings ORDER BY 2, 3, 4, 5").fetchall() == before

        delete_sources(conn, keys[1:4])
        assert_exact(conn)

        # Plain SQL writers go through the same triggers.
        conn.execute("UPDATE tenant_knowledge SET is_parent = NOT is_parent WHERE chunk_index = 1")
        assert_exact(conn)
        conn.execute("UPDATE tenant_knowledge SET source_id = source_id || 'moved' WHERE chunk_index = 2")
        assert_exact(conn)
        conn.execute("UPDATE tenant_knowledge SET search_terms = search_terms || '{visa,visa}' WHERE chunk_index % 2 = 0")
        assert_exact(conn)
        conn.execute("DELETE FROM tenant_knowledge WHERE tenant_id = 't2' AND chunk_index > 2")
        assert_exact(conn)
        conn.execute("DELETE FROM tenant_knowledge")
        assert_exact(conn)
        assert conn.execute("SELECT count(*) AS n FROM bm25_postings").fetchone()["n"] == 0


def test_the_migration_indexes_rows_written_before_it(database_url: str) -> None:
    migration = (resources.files("pilito_pipeline.store") / "migrations" / "0010_bm25_segment_postings.sql").read_text()
    backfill = migration[migration.index("-- Rows written before this migration"):]
    rng = random.Random(8)
    keys: list[SourceKey] = [("t1", "website", f"s{i}") for i in range(3)] + [("t2", "faq", "f")]
    with connect(database_url) as conn:
        upsert_sources(conn, {k: with_terms(make_rows(k, 4, with_parent=True), rng) for k in keys})
        conn.execute("TRUNCATE bm25_postings")
        conn.execute("UPDATE bm25_tenant_stats SET chunk_count = 99")
        conn.execute(backfill)
        assert_exact(conn)
        assert conn.execute("SELECT count(DISTINCT segment) AS n FROM bm25_postings").fetchone()["n"] == 1
