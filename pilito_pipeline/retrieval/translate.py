"""Persian question, English page: the query's words mapped to the tenant's English vocabulary.

multilingual-e5 puts a Persian question far from the English page that answers it: the page's
chunks sit behind every Persian chunk of the site, and BM25 shares no word with it. Words alone
fare better: embedded on its own, «لایه» lands next to "layer", «عکس» next to "photograph". So each
Persian content word of the query (its written form, stop words out) is embedded and replaced by
the nearest term of the tenant's English vocabulary (`store.term_vectors`) when the cosine reaches
`min_similarity` (and at least `min_terms` words do); those terms are searched with BM25 in the
tenant's English chunks only, a third arm of the fusion. Measured on the cross-lingual set
(README: retrieval tuning).
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from pilito_pipeline.embed import EmbeddingProvider
from pilito_pipeline.retrieval.query import QueryAnalysis
from pilito_pipeline.store.term_vectors import has_term_vectors, nearest_terms
from pilito_pipeline.text import tokenize
from pilito_pipeline.text.extract import detect_language


def translation_words(analysis: QueryAnalysis) -> tuple[str, ...]:
    """The Persian query's content words in written form (what BM25 would keep), each once."""
    if analysis.language != "fa":
        return ()
    words = (word for word in analysis.formal.split() if tokenize(word) and detect_language(word) == "fa")
    return tuple(dict.fromkeys(words))


def translate_query(conn: psycopg.Connection, tenant_id: str, embedder: EmbeddingProvider,
                    analysis: QueryAnalysis, *, min_similarity: float, min_terms: int = 2) -> tuple[str, ...]:
    """English BM25 terms for the query's Persian words; empty when the tenant has no English
    vocabulary or fewer than `min_terms` words come close enough (one word alone, on a Persian site
    with a few English pages, mostly lifts those pages for unrelated questions)."""
    words = translation_words(analysis)
    if not words or not has_term_vectors(conn, tenant_id, embedder.model_name):
        return ()
    nearest = nearest_terms(conn, tenant_id, embedder.model_name, embedder.embed_queries(list(words)))
    terms = tuple(dict.fromkeys(found[0] for found in nearest if found is not None and found[1] >= min_similarity))
    return terms if len(terms) >= min_terms else ()


def english_only(conn: psycopg.Connection, tenant_id: str,
                 hits: Sequence[tuple[int, float]]) -> list[tuple[int, float]]:
    """The hits whose chunk is English, in their order."""
    if not hits:
        return []
    rows = conn.execute(
        "SELECT id FROM tenant_knowledge WHERE tenant_id = %s AND id = ANY(%s) AND metadata->>'language' = 'en'",
        (tenant_id, [chunk_id for chunk_id, _ in hits]),
    ).fetchall()
    english = {row["id"] for row in rows}
    return [(chunk_id, score) for chunk_id, score in hits if chunk_id in english]
