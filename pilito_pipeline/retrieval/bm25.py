"""Okapi BM25 served from the postings of migration 0010 (tenant-filtered, true IDF).

score(chunk) = sum over distinct query terms t of
    idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avgdl))
idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5))       (the non-negative Lucene form)
N, avgdl: the tenant's searchable chunks and their mean length in terms; df: chunks of the tenant
containing t (the summed array lengths of the tenant's posting rows for t: one row per term and
write segment). Statistics cover the tenant's whole corpus (every chunk type); the chunk-type filter only
restricts which chunks are returned.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg.rows import tuple_row

_BM25_SQL = """
WITH stats AS (
    SELECT chunk_count::float8 AS n,
           greatest(total_length::float8 / nullif(chunk_count, 0), 1e-9) AS avgdl
      FROM bm25_tenant_stats WHERE tenant_id = %(tenant)s
), q AS (
    SELECT DISTINCT term FROM unnest(%(terms)s::text[]) AS term
), hits AS (
    SELECT p.term, p.chunk_type, p.chunk_ids, p.tfs, p.chunk_lengths
      FROM bm25_postings p JOIN q USING (term)
     WHERE p.tenant_id = %(tenant)s
), df AS (
    SELECT term, sum(cardinality(chunk_ids))::float8 AS df FROM hits GROUP BY term
)
SELECT u.chunk_id,
       sum(ln(1 + (stats.n - df.df + 0.5) / (df.df + 0.5))
           * u.tf * (%(k1)s + 1)
           / (u.tf + %(k1)s * (1 - %(b)s + %(b)s * u.chunk_length / stats.avgdl))) AS score
  FROM hits h
  JOIN df USING (term)
 CROSS JOIN stats
 CROSS JOIN LATERAL unnest(h.chunk_ids, h.tfs, h.chunk_lengths) AS u(chunk_id, tf, chunk_length)
 WHERE h.chunk_type = ANY(%(types)s)
 GROUP BY u.chunk_id
 ORDER BY score DESC, u.chunk_id
 LIMIT %(limit)s
"""


def bm25_search(
    conn: psycopg.Connection,
    tenant_id: str,
    chunk_types: Sequence[str],
    terms: Sequence[str],
    limit: int,
    *,
    k1: float = 1.2,
    b: float = 0.75,
) -> list[tuple[int, float]]:
    """(chunk id, BM25 score) of the tenant's best `limit` chunks of `chunk_types`, best first."""
    if not terms or not chunk_types or limit < 1:
        return []
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(_BM25_SQL, {"tenant": tenant_id, "terms": list(terms), "types": list(chunk_types),
                                "k1": float(k1), "b": float(b), "limit": int(limit)})
        return [(int(chunk_id), float(score)) for chunk_id, score in cur.fetchall()]


_CEILING_SQL = """
WITH stats AS (
    SELECT chunk_count::float8 AS n FROM bm25_tenant_stats WHERE tenant_id = %(tenant)s
), df AS (
    SELECT term, sum(cardinality(chunk_ids))::float8 AS df
      FROM bm25_postings
     WHERE tenant_id = %(tenant)s AND term = ANY(%(terms)s::text[])
     GROUP BY term
)
SELECT coalesce(sum(ln(1 + (stats.n - df.df + 0.5) / (df.df + 0.5))), 0) * (%(k1)s + 1)
  FROM df CROSS JOIN stats
"""


def bm25_ceiling(conn: psycopg.Connection, tenant_id: str, terms: Sequence[str], *, k1: float = 1.2) -> float:
    """What a chunk would score that held every one of `terms` the tenant's text has, many times
    over (each term's score tends to idf * (k1 + 1)): the scale on which a BM25 score says how much
    of the query a chunk matched. Terms no chunk of the tenant contains do not count. 0 when none
    is known."""
    if not terms:
        return 0.0
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(_CEILING_SQL, {"tenant": tenant_id, "terms": list(dict.fromkeys(terms)),
                                         "k1": float(k1)}).fetchone()
    return float(row[0]) if row and row[0] is not None else 0.0


def tenant_chunk_count(conn: psycopg.Connection, tenant_id: str) -> int:
    """The tenant's searchable (non-parent) chunks, from the BM25 statistics (one index lookup)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute("SELECT chunk_count FROM bm25_tenant_stats WHERE tenant_id = %s", (tenant_id,)).fetchone()
    return int(row[0]) if row else 0
