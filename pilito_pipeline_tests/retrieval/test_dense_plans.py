"""Dense plans: which index each plan uses (EXPLAIN), the registry decides, and both plans agree."""

from __future__ import annotations

import numpy as np
import pytest
from pgvector import HalfVector
from pgvector import SparseVector as PgSparseVector

from pilito_pipeline.sparse_vector import SparseVector
from pilito_pipeline.retrieval.latent import latent_search, tenant_latent_plan
from pilito_pipeline.retrieval.dense import (
    dense_search,
    explain_dense,
    tenant_dense_plan,
)
from pilito_pipeline.store.ann_indexes import (
    ann_index_names,
    drop_tenant_ann_index,
    ensure_tenant_ann_index,
)
from pilito_pipeline.store.db import connect

BIG, SMALL, OTHERS = 600, 50, 40
MODEL = "m"


def load(url: str, rng: np.random.Generator) -> None:
    """Tenant 'big' (600 chunks), 'small' (50) and 40 others of 100, plus parents; then ANALYZE."""
    with connect(url) as conn, conn.cursor() as cur:
        with cur.copy("COPY tenant_knowledge (tenant_id, chunk_type, source_id, chunk_index, total_chunks,"
                      " is_parent, full_text, content_hash, embedding_model, full_embedding, tldr_embedding,"
                      " latent_terms) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["text", "text", "text", "int4", "int4", "bool", "text", "text", "text", "halfvec", "halfvec",
                            "sparsevec"])
            tenants = [("big", BIG), ("small", SMALL)] + [(f"other{n}", 100) for n in range(OTHERS)]
            for tenant, size in tenants:
                copy.write_row((tenant, "website", "parent", 0, 1, True, "parent", "h", None, None, None, None))
                vectors = rng.standard_normal((size, 2, 384)).astype(np.float32)
                for n in range(size):
                    chunk_type = "faq" if n % 10 == 0 else "website"
                    copy.write_row((tenant, chunk_type, f"p{n}", 0, 1, False, "x", "h", MODEL,
                                    HalfVector(vectors[n, 0]), HalfVector(vectors[n, 1]), latent_terms(rng)))
        conn.commit()
        conn.execute("ANALYZE tenant_knowledge")
        conn.commit()


def latent_terms(rng: np.random.Generator) -> PgSparseVector:
    terms = SparseVector.of(rng.choice(16384, 40, replace=False), rng.random(40) + 0.01, 16384)
    return PgSparseVector(dict(zip(terms.indices.tolist(), terms.values.tolist(), strict=True)), 16384)


def test_the_latent_term_arm_has_the_same_plans(database_url: str) -> None:
    rng = np.random.default_rng(6)
    load(database_url, rng)
    assert ensure_tenant_ann_index(database_url, "big", min_chunks=500)
    query = SparseVector.of(rng.choice(16384, 40, replace=False), rng.random(40) + 0.01, 16384)
    with connect(database_url, autocommit=True) as conn:
        assert tenant_latent_plan(conn, "big") == "hnsw" and tenant_latent_plan(conn, "small") == "exact"
        exact = latent_search(conn, "big", ["website"], query, 20, model=MODEL, plan="exact")
        ann = latent_search(conn, "big", ["website"], query, 20, model=MODEL, plan="hnsw", ef_search=200)
        assert exact and [s for _, s in exact] == sorted((s for _, s in exact), reverse=True)
        assert len({i for i, _ in exact} & {i for i, _ in ann}) >= 0.8 * len(exact)
        plan = "\n".join(r["QUERY PLAN"] for r in conn.execute(
            "EXPLAIN SELECT id FROM tenant_knowledge WHERE tenant_id = 'big' AND NOT is_parent"
            " ORDER BY latent_terms <#> %s LIMIT 5", (latent_terms(rng),), prepare=False))
        assert f"Index Scan using {ann_index_names('big')[2]}" in plan
        ids = [i for i, _ in latent_search(conn, "small", ["website"], query, 50, model=MODEL)]
        owners = {r["tenant_id"] for r in conn.execute("SELECT DISTINCT tenant_id FROM tenant_knowledge WHERE id = ANY(%s)", (ids,))}
        assert owners <= {"small"}


def test_each_plan_uses_its_index_and_the_registry_decides(database_url: str) -> None:
    rng = np.random.default_rng(5)
    load(database_url, rng)
    assert ensure_tenant_ann_index(database_url, "big", min_chunks=500)
    assert ensure_tenant_ann_index(database_url, "small", min_chunks=500) is None
    full_index, tldr_index, _ = ann_index_names("big")
    query = rng.standard_normal(384).astype(np.float32)
    with connect(database_url, autocommit=True) as conn:
        assert tenant_dense_plan(conn, "big") == "hnsw" and tenant_dense_plan(conn, "small") == "exact"
        ann = explain_dense(conn, "big", ["website"], query, 20, model=MODEL, plan="hnsw")
        assert f"Index Scan using {full_index}" in ann and tldr_index not in ann  # TL;DR arm off by default
        ann = explain_dense(conn, "big", ["website"], query, 20, model=MODEL, plan="hnsw", tldr=True)
        assert f"Index Scan using {full_index}" in ann and f"Index Scan using {tldr_index}" in ann
        for tenant in ("big", "small"):
            exact = explain_dense(conn, tenant, ["website"], query, 20, model=MODEL, plan="exact")
            assert "tenant_knowledge_tenant_type" in exact, exact
            assert "hnsw" not in exact and "tenant_knowledge_ann_" not in exact and "Seq Scan" not in exact
        # Another tenant's partial index can never serve a query: its predicate names another tenant.
        assert "tenant_knowledge_ann_" not in explain_dense(conn, "small", ["website"], query, 20, model=MODEL, plan="hnsw")

        # Both plans answer the same (HNSW over 540 website chunks of one tenant is near exact).
        exact_ids = [i for i, _ in dense_search(conn, "big", ["website"], query, 20, model=MODEL, plan="exact")]
        ann_hits = dense_search(conn, "big", ["website"], query, 20, model=MODEL, plan="hnsw", ef_search=100)
        assert len(ann_hits) == 20 and len(set(exact_ids) & {i for i, _ in ann_hits}) >= 18
        ids = [i for i, _ in ann_hits]
        assert conn.execute("SELECT count(*) AS n FROM tenant_knowledge WHERE id = ANY(%s)"
                            " AND tenant_id = 'big' AND chunk_type = 'website' AND NOT is_parent",
                            (ids,)).fetchone()["n"] == 20
        # The chunk-type filter is applied after the (all-types) graph; iterative scans still fill the limit.
        faq = dense_search(conn, "big", ["faq"], query, 20, model=MODEL, plan="hnsw")
        exact_faq = {i for i, _ in dense_search(conn, "big", ["faq"], query, 20, model=MODEL, plan="exact")}
        assert len(faq) == 20 and len(exact_faq & {i for i, _ in faq}) >= 18

    assert drop_tenant_ann_index(database_url, "big")
    with connect(database_url, autocommit=True) as conn:
        assert tenant_dense_plan(conn, "big") == "exact"
        # A stale "hnsw" decision without the index still answers, exactly.
        assert [i for i, _ in dense_search(conn, "big", ["website"], query, 20, model=MODEL, plan="hnsw")] == exact_ids


@pytest.mark.parametrize("plan", ["exact", "hnsw"])
def test_plans_never_cross_tenants(database_url: str, plan: str) -> None:
    rng = np.random.default_rng(9)
    load(database_url, rng)
    ensure_tenant_ann_index(database_url, "big", min_chunks=500)
    with connect(database_url, autocommit=True) as conn:
        for tenant in ("big", "small", "other3"):
            ids = [i for i, _ in dense_search(conn, tenant, ["website", "faq"], rng.standard_normal(384), 50, model=MODEL,
                                              plan=plan)]
            owners = {r["tenant_id"] for r in conn.execute(
                "SELECT DISTINCT tenant_id FROM tenant_knowledge WHERE id = ANY(%s)", (ids,))}
            assert owners == {tenant} and len(ids) == 50
