"""Tenant-filtered vector search over full-text and TL;DR embeddings, with an explicit plan.

`exact`: brute force over the tenant's rows (via the (tenant_id, chunk_type) index); the ORDER BY
expression is written so the HNSW index cannot serve it. Perfect recall; cost grows with the tenant.
`hnsw`: the shared HNSW indexes with the tenant filter and pgvector's iterative scans
(`hnsw.iterative_scan = relaxed_order`), so a filter that rejects most of the graph still returns
`limit` rows; other plans are switched off for the statement so the planner cannot pick a sort.
The caller chooses the plan by tenant size (`RetrievalConfig.exact_search_max_chunks`), a threshold
set from measured recall and latency (see pilito_pipeline_tests/bench/bench_retrieval.py).
A chunk's similarity is the better of its full-text and TL;DR similarities.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import psycopg
from pgvector import HalfVector
from psycopg.rows import tuple_row

DensePlan = Literal["exact", "hnsw"]

_ARM = """
(SELECT id, {distance} AS distance FROM tenant_knowledge
  WHERE tenant_id = %(tenant)s AND chunk_type = ANY(%(types)s) AND NOT is_parent
    AND {column} IS NOT NULL
  ORDER BY distance LIMIT %(limit)s)
"""


def _arm(column: str, plan: DensePlan) -> str:
    distance = f"({column} <=> %(vector)s)"
    # "+ 0" makes the sort key an expression the HNSW index cannot provide: a true exact scan.
    return _ARM.format(distance=distance + (" + 0" if plan == "exact" else ""), column=column)


def _search_sql(plan: DensePlan) -> str:
    return (
        "SELECT id, 1 - min(distance) AS similarity FROM ("
        + _arm("full_embedding", plan) + " UNION ALL " + _arm("tldr_embedding", plan)
        + ") arms GROUP BY id ORDER BY min(distance), id LIMIT %(limit)s"
    )


_SQL = {"exact": _search_sql("exact"), "hnsw": _search_sql("hnsw")}


def choose_plan(tenant_chunks: int, exact_search_max_chunks: int) -> DensePlan:
    return "exact" if tenant_chunks <= exact_search_max_chunks else "hnsw"


def dense_search(
    conn: psycopg.Connection,
    tenant_id: str,
    chunk_types: Sequence[str],
    vector: np.ndarray,
    limit: int,
    *,
    plan: DensePlan,
    ef_search: int = 100,
) -> list[tuple[int, float]]:
    """(chunk id, cosine similarity) of the tenant's `limit` nearest chunks, best first.

    Runs in its own transaction (the plan settings are SET LOCAL); the connection must be idle.
    """
    if not chunk_types or limit < 1:
        return []
    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
        _set_plan(cur, plan, max(int(ef_search), int(limit)))
        cur.execute(_SQL[plan], _params(tenant_id, chunk_types, vector, limit))
        return [(int(chunk_id), float(similarity)) for chunk_id, similarity in cur.fetchall()]


def explain_dense(conn: psycopg.Connection, tenant_id: str, chunk_types: Sequence[str], vector: np.ndarray,
                  limit: int, *, plan: DensePlan, ef_search: int = 100) -> str:
    """The plan PostgreSQL runs for `dense_search` (EXPLAIN text), to check which index it uses."""
    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
        _set_plan(cur, plan, max(int(ef_search), int(limit)))
        rows = cur.execute("EXPLAIN " + _SQL[plan], _params(tenant_id, chunk_types, vector, limit)).fetchall()
    return "\n".join(row[0] for row in rows)


def _params(tenant_id: str, chunk_types: Sequence[str], vector: np.ndarray, limit: int) -> dict[str, object]:
    return {"tenant": tenant_id, "types": list(chunk_types), "limit": int(limit),
            "vector": HalfVector(np.asarray(vector, dtype=np.float32))}


def _set_plan(cur: psycopg.Cursor, plan: DensePlan, ef_search: int) -> None:
    if plan == "hnsw":
        cur.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        cur.execute(f"SET LOCAL hnsw.ef_search = {int(ef_search)}")
        for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
            cur.execute(f"SET LOCAL {setting} = off")
