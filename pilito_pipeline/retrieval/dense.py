"""Tenant-filtered vector search over full-text and TL;DR embeddings, with an explicit plan.

`exact`: brute force over the tenant's rows, read through the (tenant_id, chunk_type) btree; the
ORDER BY expression is written so no HNSW index can serve it. Perfect recall; cost grows with the
tenant (measured ~linear; see pilito_pipeline_tests/bench/bench_retrieval.py).
`hnsw`: the tenant's own partial HNSW indexes (store/ann_indexes.py: `WHERE tenant_id = '<tenant>'
AND NOT is_parent`), which the planner matches because the query carries the same predicate and is
planned with the actual tenant id (never a generic prepared plan). The graph holds only this
tenant's chunks, so recall is that of unfiltered HNSW; iterative scans
(`hnsw.iterative_scan = relaxed_order`) still return `limit` rows when the chunk-type filter rejects
some, and other plans are switched off for the statement. A tenant without a valid partial index
gets the same answer by an exact scan (the planner has nothing else), only slower.
`tenant_dense_plan` picks the plan from the registry of built indexes. Only vectors of `model` (the
configured embedding model) are compared: after a model change, rows not yet re-embedded are left
out, never ranked in another model's vector space. A chunk's similarity is the
better of its full-text and TL;DR similarities when the TL;DR arm is searched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import psycopg
from pgvector import HalfVector
from psycopg.rows import tuple_row

from pilito_pipeline.store.ann_indexes import tenant_ann_index_ready

DensePlan = Literal["exact", "hnsw"]

_ARM = """
(SELECT id, {distance} AS distance FROM tenant_knowledge
  WHERE tenant_id = %(tenant)s AND chunk_type = ANY(%(types)s) AND NOT is_parent
    AND embedding_model = %(model)s
    AND {column} IS NOT NULL
  ORDER BY distance LIMIT %(limit)s)
"""


def _arm(column: str, plan: DensePlan) -> str:
    distance = f"({column} <=> %(vector)s)"
    # "+ 0" makes the sort key an expression the HNSW index cannot provide: a true exact scan.
    return _ARM.format(distance=distance + (" + 0" if plan == "exact" else ""), column=column)


def _search_sql(plan: DensePlan, tldr: bool) -> str:
    arms = _arm("full_embedding", plan) + (" UNION ALL " + _arm("tldr_embedding", plan) if tldr else "")
    return (
        "SELECT id, 1 - min(distance) AS similarity FROM (" + arms
        + ") arms GROUP BY id ORDER BY min(distance), id LIMIT %(limit)s"
    )


_SQL = {(plan, tldr): _search_sql(plan, tldr) for plan in ("exact", "hnsw") for tldr in (False, True)}


def tenant_dense_plan(conn: psycopg.Connection, tenant_id: str) -> DensePlan:
    """`hnsw` when the tenant's partial HNSW indexes are registered and valid, else `exact`."""
    return "hnsw" if tenant_ann_index_ready(conn, tenant_id) else "exact"


def dense_search(
    conn: psycopg.Connection,
    tenant_id: str,
    chunk_types: Sequence[str],
    vector: np.ndarray,
    limit: int,
    *,
    model: str,
    plan: DensePlan,
    ef_search: int = 100,
    tldr: bool = False,
) -> list[tuple[int, float]]:
    """(chunk id, cosine similarity) of the tenant's `limit` nearest chunks, best first; with
    `tldr`, a chunk's similarity is the better of its full-text and TL;DR similarities.

    Runs in its own transaction (the plan settings are SET LOCAL); the connection must be idle.
    """
    if not chunk_types or limit < 1:
        return []
    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
        set_plan(cur, plan, max(int(ef_search), int(limit)))
        # prepare=False: planned with the actual tenant id, so the partial index predicate matches.
        cur.execute(_SQL[plan, tldr], _params(tenant_id, chunk_types, vector, limit, model), prepare=False)
        return [(int(chunk_id), float(similarity)) for chunk_id, similarity in cur.fetchall()]


def explain_dense(conn: psycopg.Connection, tenant_id: str, chunk_types: Sequence[str], vector: np.ndarray,
                  limit: int, *, model: str, plan: DensePlan, ef_search: int = 100, tldr: bool = False) -> str:
    """The plan PostgreSQL runs for `dense_search` (EXPLAIN text), to check which index it uses."""
    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
        set_plan(cur, plan, max(int(ef_search), int(limit)))
        rows = cur.execute("EXPLAIN " + _SQL[plan, tldr], _params(tenant_id, chunk_types, vector, limit, model),
                           prepare=False).fetchall()
    return "\n".join(row[0] for row in rows)


def _params(tenant_id: str, chunk_types: Sequence[str], vector: np.ndarray, limit: int,
            model: str) -> dict[str, object]:
    return {"tenant": tenant_id, "types": list(chunk_types), "limit": int(limit), "model": model,
            "vector": HalfVector(np.asarray(vector, dtype=np.float32))}


def set_plan(cur: psycopg.Cursor, plan: DensePlan, ef_search: int) -> None:
    if plan == "hnsw":
        cur.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        cur.execute(f"SET LOCAL hnsw.ef_search = {int(ef_search)}")
        for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
            cur.execute(f"SET LOCAL {setting} = off")
