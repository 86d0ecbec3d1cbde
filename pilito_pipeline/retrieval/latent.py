"""Tenant-filtered search over the chunks' latent terms (`embed/latent_terms.py`).

The query's latent terms against each chunk's, by inner product of the two L2-normalised vectors
(a cosine: 0 for no shared feature, 1 for the same features in the same proportions), over the
tenant's rows of the configured embedding model only. Plans as for dense search
(retrieval/dense.py): an exact scan of the tenant's rows, or the tenant's own partial HNSW index
over `latent_terms` (store/ann_indexes.py) once it is registered and valid.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from pgvector import SparseVector as PgSparseVector
from psycopg.rows import tuple_row

from pilito_pipeline.sparse_vector import SparseVector
from pilito_pipeline.retrieval.dense import DensePlan, set_plan
from pilito_pipeline.store.ann_indexes import ann_index_names, tenant_ann_index_ready

_SQL = """
SELECT id, -(latent_terms <#> %(terms)s) AS similarity FROM tenant_knowledge
 WHERE tenant_id = %(tenant)s AND chunk_type = ANY(%(types)s) AND NOT is_parent
   AND embedding_model = %(model)s AND latent_terms IS NOT NULL
 ORDER BY (latent_terms <#> %(terms)s){exact} LIMIT %(limit)s
"""
_PLANS: dict[str, str] = {"exact": _SQL.format(exact=" + 0"), "hnsw": _SQL.format(exact="")}
"""`+ 0`: a sort key no HNSW index provides, so the exact plan really scans."""


def tenant_latent_plan(conn: psycopg.Connection, tenant_id: str) -> DensePlan:
    """`hnsw` when the tenant's registered, valid ANN indexes include the latent-term one."""
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute("SELECT index_names FROM tenant_ann_indexes WHERE tenant_id = %s", (tenant_id,)).fetchone()
    # a registered tenant has a valid id (the registry checks it), so its index names can be computed
    if row is None or ann_index_names(tenant_id)[-1] not in row[0]:
        return "exact"
    return "hnsw" if tenant_ann_index_ready(conn, tenant_id) else "exact"


def latent_search(conn: psycopg.Connection, tenant_id: str, chunk_types: Sequence[str], terms: SparseVector,
                  limit: int, *, model: str, plan: DensePlan = "exact", ef_search: int = 100) -> list[tuple[int, float]]:
    """(chunk id, cosine of latent terms) of the tenant's `limit` best chunks, best first; chunks
    sharing no feature with the query are left out. Runs in its own transaction (the plan's
    settings are SET LOCAL); the connection must be idle."""
    if not chunk_types or limit < 1 or not len(terms.indices):
        return []
    query = PgSparseVector(dict(zip(terms.indices.tolist(), terms.values.tolist(), strict=True)), terms.dimension)
    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
        set_plan(cur, plan, max(int(ef_search), int(limit)))
        # prepare=False: planned with the actual tenant id, so the partial index predicate matches
        rows = cur.execute(_PLANS[plan], {"tenant": tenant_id, "types": list(chunk_types), "terms": query,
                                          "limit": int(limit), "model": model}, prepare=False).fetchall()
    return [(int(chunk_id), float(similarity)) for chunk_id, similarity in rows if similarity > 0]
