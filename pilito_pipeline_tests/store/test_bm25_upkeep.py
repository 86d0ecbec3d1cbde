"""BM25 upkeep (migrations 0010 and 0012) stays exact: after inserts, updates and deletes, through
`upsert_sources` (which builds the postings of the chunks it inserts itself) and through plain SQL
(the triggers), the postings and statistics equal a from-scratch recomputation from
`tenant_knowledge`, and the rows and scores `upsert_sources` writes are those bm25_add writes;
the migration's rebuild of existing rows too."""

from __future__ import annotations

import random
from importlib import resources

import psycopg

from pilito_pipeline.retrieval.bm25 import bm25_search
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


REBUILD = """
SELECT bm25_add(ARRAY(SELECT ROW(k.id, k.tenant_id, k.chunk_type, k.search_terms)::bm25_chunk
                        FROM tenant_knowledge k WHERE NOT k.is_parent ORDER BY k.id))
"""
SEGMENT_ROWS = """
SELECT tenant_id, term, chunk_type, chunk_ids, tfs, chunk_lengths FROM bm25_postings ORDER BY 1, 2, 3
"""


def all_scores(conn: psycopg.Connection) -> dict[tuple[str, str], list[tuple[int, float]]]:
    return {(tenant, term): bm25_search(conn, tenant, ["website", "faq"], [term, "visa"], 1000)
            for tenant in ("t1", "t2") for term in VOCABULARY}


def test_upsert_sources_writes_the_rows_and_scores_bm25_add_writes(database_url: str) -> None:
    """A first write through `upsert_sources` (postings built in Python, migration 0012) leaves the
    same postings rows, arrays in the same order, and the same scores as the trigger's bm25_add
    indexing the same chunks in one statement."""
    rng = random.Random(11)
    keys: list[SourceKey] = [(tenant, kind, f"s{i}") for tenant in ("t1", "t2") for kind in ("website", "faq")
                             for i in range(6)]
    with connect(database_url) as conn:
        upsert_sources(conn, {k: with_terms(make_rows(k, 6, with_parent=True), rng) for k in keys})
        assert conn.execute("SELECT count(DISTINCT segment) AS n FROM bm25_postings").fetchone()["n"] == 1
        written = conn.execute(SEGMENT_ROWS).fetchall()
        stats = conn.execute(STORED_STATS).fetchall()
        scores = all_scores(conn)
        assert any(scores.values())

        conn.execute("TRUNCATE bm25_postings, bm25_tenant_stats")
        conn.execute(REBUILD)
        assert conn.execute(SEGMENT_ROWS).fetchall() == written
        assert conn.execute(STORED_STATS).fetchall() == stats
        assert all_scores(conn) == scores


def test_plain_inserts_after_upsert_sources_in_its_transaction_are_indexed(database_url: str) -> None:
    """The setting that hands the merge's rows to `upsert_sources` ends with the merge."""
    rng = random.Random(12)
    with connect(database_url) as conn, conn.transaction():
        upsert_sources(conn, {("t1", "website", "a"): with_terms(make_rows(("t1", "website", "a"), 3), rng)})
        conn.execute(
            "INSERT INTO tenant_knowledge (tenant_id, chunk_type, source_id, chunk_index, total_chunks, is_parent,"
            " section_title, full_text, tldr, word_count, search_terms, content_hash)"
            " VALUES ('t1', 'faq', 'plain', 0, 1, false, '', 'visa visa', '', 2, '{visa,visa}', 'h')"
        )
        assert_exact(conn)
        plain = conn.execute("SELECT count(*) AS n FROM bm25_postings WHERE chunk_type = 'faq'").fetchone()
        assert plain["n"] == 1


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
