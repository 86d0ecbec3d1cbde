"""Tenants' English vocabulary vectors (migration 0016), read by cross-lingual query translation.

Connections come from `store.db` (dict rows).

A tenant's vocabulary is the English BM25 terms (`search_terms`) found in at least `min_chunks`
of its English chunks of the current model. `retrieval/translate.py` maps a Persian query word to
the nearest of them; `ingest/term_vectors.py` keeps them up to date.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
import psycopg
from pgvector import HalfVector

ENGLISH_CHUNKS = "NOT k.is_parent AND k.metadata->>'language' = 'en'"
TERM_PATTERN = "^[a-z][a-z-]{2,}$"
"""Words of three letters or more: numbers, single letters and identifiers carry no meaning to map."""


def tenants_needing_term_vectors(conn: psycopg.Connection, model: str) -> list[str]:
    """Tenants with English chunks of `model` written after their vocabulary's last refresh."""
    rows = conn.execute(
        f"""SELECT k.tenant_id FROM tenant_knowledge k
              LEFT JOIN term_vector_refreshes r ON r.tenant_id = k.tenant_id AND r.model = %(model)s
             WHERE {ENGLISH_CHUNKS} AND k.embedding_model = %(model)s
             GROUP BY k.tenant_id, r.refreshed_at
            HAVING r.refreshed_at IS NULL OR max(k.updated_at) > r.refreshed_at
             ORDER BY k.tenant_id""",
        {"model": model},
    ).fetchall()
    return [row["tenant_id"] for row in rows]


def terms_without_vectors(conn: psycopg.Connection, tenant_id: str, model: str, *, min_chunks: int = 2,
                          limit: int = 5000) -> list[str]:
    """The tenant's vocabulary terms (most frequent first, at most `limit` in the vocabulary) that
    have no vector yet."""
    rows = conn.execute(
        f"""WITH vocabulary AS (
                SELECT term, count(DISTINCT k.id) AS chunks FROM tenant_knowledge k, unnest(k.search_terms) AS term
                 WHERE k.tenant_id = %(tenant)s AND {ENGLISH_CHUNKS} AND k.embedding_model = %(model)s
                   AND term ~ %(pattern)s
                 GROUP BY term HAVING count(DISTINCT k.id) >= %(min_chunks)s
                 ORDER BY chunks DESC, term LIMIT %(limit)s)
            SELECT v.term FROM vocabulary v
             WHERE NOT EXISTS (SELECT 1 FROM term_vectors t
                                WHERE t.tenant_id = %(tenant)s AND t.model = %(model)s AND t.term = v.term)
             ORDER BY v.chunks DESC, v.term""",
        {"tenant": tenant_id, "model": model, "pattern": TERM_PATTERN, "min_chunks": min_chunks, "limit": limit},
    ).fetchall()
    return [row["term"] for row in rows]


def store_term_vectors(conn: psycopg.Connection, tenant_id: str, model: str, terms: Sequence[str],
                       vectors: np.ndarray) -> int:
    """Insert the terms' vectors (a term already stored keeps its vector); returns rows written."""
    if len(terms) != len(vectors):
        raise ValueError(f"{len(terms)} terms but {len(vectors)} vectors")
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO term_vectors (tenant_id, model, term, embedding) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            [(tenant_id, model, term, HalfVector(np.asarray(vector, dtype=np.float32)))
             for term, vector in zip(terms, vectors, strict=True)],
        )
    return len(terms)


def mark_refreshed(conn: psycopg.Connection, tenant_id: str, model: str, as_of: datetime) -> None:
    conn.execute(
        "INSERT INTO term_vector_refreshes (tenant_id, model, refreshed_at) VALUES (%s, %s, %s)"
        " ON CONFLICT (tenant_id, model) DO UPDATE SET refreshed_at = EXCLUDED.refreshed_at",
        (tenant_id, model, as_of),
    )


def has_term_vectors(conn: psycopg.Connection, tenant_id: str, model: str) -> bool:
    row = conn.execute("SELECT EXISTS (SELECT 1 FROM term_vectors WHERE tenant_id = %s AND model = %s) AS found",
                       (tenant_id, model)).fetchone()
    return bool(row["found"])


def nearest_terms(conn: psycopg.Connection, tenant_id: str, model: str,
                  vectors: np.ndarray) -> list[tuple[str, float] | None]:
    """For each vector, the tenant's nearest vocabulary term and its cosine (None: no vocabulary)."""
    nearest: list[tuple[str, float] | None] = []
    for vector in vectors:
        row = conn.execute(
            "SELECT term, 1 - (embedding <=> %(v)s) AS similarity FROM term_vectors"
            " WHERE tenant_id = %(tenant)s AND model = %(model)s ORDER BY embedding <=> %(v)s, term LIMIT 1",
            {"v": HalfVector(np.asarray(vector, dtype=np.float32)), "tenant": tenant_id, "model": model},
            prepare=False,
        ).fetchone()
        nearest.append(None if row is None else (row["term"], float(row["similarity"])))
    return nearest

