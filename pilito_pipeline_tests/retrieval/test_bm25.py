"""The BM25 index (migration 0002 triggers) and scores against a hand computation."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from pilito_pipeline.retrieval.bm25 import bm25_ceiling, bm25_search, tenant_chunk_count
from pilito_pipeline.store.db import connect
from pilito_pipeline_tests.retrieval.conftest import ChunkSpec, insert_chunks


def postings(conn, tenant: str) -> dict[tuple[str, int], int]:
    rows = conn.execute("SELECT p.term, u.chunk_id, u.tf FROM bm25_postings p,"
                        " unnest(p.chunk_ids, p.tfs) AS u(chunk_id, tf) WHERE p.tenant_id = %s", (tenant,)).fetchall()
    return {(r["term"], r["chunk_id"]): r["tf"] for r in rows}


def stats(conn, tenant: str) -> tuple[int, int]:
    row = conn.execute("SELECT chunk_count, total_length FROM bm25_tenant_stats WHERE tenant_id = %s",
                       (tenant,)).fetchone()
    return (row["chunk_count"], row["total_length"]) if row else (0, 0)


def test_triggers_keep_postings_and_stats_in_step(database_url: str) -> None:
    with connect(database_url) as conn:
        a, b, parent = insert_chunks(conn, [
            ChunkSpec("t1", "x", search_terms=["apple", "apple", "pear"]),
            ChunkSpec("t1", "y", chunk_index=1, search_terms=["pear"]),
            ChunkSpec("t1", "whole section", chunk_index=2, is_parent=True, search_terms=["apple"]),
        ])
        assert postings(conn, "t1") == {("apple", a): 2, ("pear", a): 1, ("pear", b): 1}
        assert stats(conn, "t1") == (2, 4)  # the parent is neither indexed nor counted

        conn.execute("UPDATE tenant_knowledge SET search_terms = %s WHERE id = %s", (["plum"], b))
        assert postings(conn, "t1") == {("apple", a): 2, ("pear", a): 1, ("plum", b): 1}
        assert stats(conn, "t1") == (2, 4)

        conn.execute("UPDATE tenant_knowledge SET is_parent = true WHERE id = %s", (a,))
        assert postings(conn, "t1") == {("plum", b): 1}
        assert stats(conn, "t1") == (1, 1)

        conn.execute("DELETE FROM tenant_knowledge WHERE id = ANY(%s)", ([a, b, parent],))
        assert postings(conn, "t1") == {}
        assert stats(conn, "t1") == (0, 0)


def test_unrelated_updates_do_not_touch_postings(database_url: str) -> None:
    with connect(database_url) as conn:
        (a,) = insert_chunks(conn, [ChunkSpec("t1", "x", search_terms=["apple"])])
        before = conn.execute("SELECT xmin::text FROM bm25_postings WHERE %s = ANY(chunk_ids)", (a,)).fetchone()
        conn.execute("UPDATE tenant_knowledge SET tldr = 'changed', search_terms = search_terms WHERE id = %s", (a,))
        after = conn.execute("SELECT xmin::text FROM bm25_postings WHERE %s = ANY(chunk_ids)", (a,)).fetchone()
        assert before == after


def test_upsert_via_on_conflict_reindexes(database_url: str) -> None:
    """upsert_sources writes INSERT ... ON CONFLICT DO UPDATE: the update path must fire."""
    with connect(database_url) as conn:
        (a,) = insert_chunks(conn, [ChunkSpec("t1", "x", search_terms=["apple"])])
        conn.execute(
            "INSERT INTO tenant_knowledge (tenant_id, chunk_type, source_id, chunk_index, total_chunks,"
            " full_text, search_terms, content_hash) VALUES ('t1','website','p1',0,1,'x',%s,'h')"
            " ON CONFLICT ON CONSTRAINT tenant_knowledge_chunk_identity DO UPDATE"
            " SET search_terms = EXCLUDED.search_terms", (["kiwi", "kiwi"],))
        assert postings(conn, "t1") == {("kiwi", a): 2}
        assert stats(conn, "t1") == (1, 2)


CORPUS = {
    "d1": ["apple", "banana", "apple", "cherry"],
    "d2": ["banana", "date"],
    "d3": ["apple", "elder", "fig", "grape", "apple", "apple"],
    "d4": ["cherry"],
}


def hand_bm25(query: list[str], corpus: dict[str, list[str]], k1: float, b: float) -> dict[str, float]:
    n = len(corpus)
    avgdl = sum(len(terms) for terms in corpus.values()) / n
    scores = {}
    for doc, terms in corpus.items():
        tf = Counter(terms)
        score = 0.0
        for term in dict.fromkeys(query):
            df = sum(1 for other in corpus.values() if term in other)
            if tf[term] == 0:
                continue
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            score += idf * tf[term] * (k1 + 1) / (tf[term] + k1 * (1 - b + b * len(terms) / avgdl))
        if score:
            scores[doc] = score
    return scores


@pytest.mark.parametrize(("k1", "b"), [(1.2, 0.75), (2.0, 0.0), (0.5, 1.0)])
def test_scores_match_hand_computation(database_url: str, k1: float, b: float) -> None:
    with connect(database_url) as conn:
        ids = insert_chunks(conn, [ChunkSpec("t1", doc, source_id=doc, search_terms=terms)
                                   for doc, terms in CORPUS.items()])
        # Another tenant's corpus must not change t1's statistics or results.
        insert_chunks(conn, [ChunkSpec("t2", "z", search_terms=["apple"] * 5 + ["cherry"])])
        name_of = dict(zip(ids, CORPUS, strict=True))
        query = ["apple", "cherry", "apple", "unknown"]
        got = {name_of[i]: s for i, s in bm25_search(conn, "t1", ["website"], query, 10, k1=k1, b=b)}
        expected = hand_bm25(query, CORPUS, k1, b)
        assert got.keys() == expected.keys()
        for doc, score in expected.items():
            assert got[doc] == pytest.approx(score, rel=1e-9)
        ranked = [name_of[i] for i, _ in bm25_search(conn, "t1", ["website"], query, 2, k1=k1, b=b)]
        assert ranked == sorted(expected, key=lambda d: -expected[d])[:2]
        assert tenant_chunk_count(conn, "t1") == 4
        # The ceiling: every known query term at idf * (k1 + 1); "unknown" is in no chunk of t1.
        n = len(CORPUS)
        df = {t: sum(t in terms for terms in CORPUS.values()) for t in ("apple", "cherry")}
        ceiling = sum(math.log(1 + (n - d + 0.5) / (d + 0.5)) for d in df.values()) * (k1 + 1)
        assert bm25_ceiling(conn, "t1", query, k1=k1) == pytest.approx(ceiling, rel=1e-9)
        assert max(expected.values()) < ceiling
        assert bm25_ceiling(conn, "t1", ["unknown"], k1=k1) == 0.0
        assert bm25_ceiling(conn, "t1", [], k1=k1) == 0.0


def test_chunk_type_filter_and_empty_queries(database_url: str) -> None:
    with connect(database_url) as conn:
        web, faq = insert_chunks(conn, [
            ChunkSpec("t1", "a", search_terms=["visa"]),
            ChunkSpec("t1", "b", chunk_type="faq", search_terms=["visa"]),
        ])
        assert [i for i, _ in bm25_search(conn, "t1", ["faq"], ["visa"], 10)] == [faq]
        assert {i for i, _ in bm25_search(conn, "t1", ["faq", "website"], ["visa"], 10)} == {web, faq}
        assert bm25_search(conn, "t1", ["website"], [], 10) == []
        assert bm25_search(conn, "nobody", ["website"], ["visa"], 10) == []
