-- Vector search moves from two shared HNSW indexes to per-tenant partial HNSW indexes.
--
-- The shared indexes made every write pay HNSW maintenance (~200-600 rows/s whatever the insert
-- method) while serving almost no query: tenant-filtered search on a shared graph has poor recall
-- for small tenants, so every tenant up to 20,000 chunks already used an exact scan (through the
-- (tenant_id, chunk_type) btree, tenant_knowledge_tenant_type). Now a tenant gets its own partial
-- HNSW indexes (full and TL;DR embeddings, WHERE tenant_id = '<tenant>' AND NOT is_parent) once it
-- is large enough; store/ann_indexes.py builds them CONCURRENTLY and records them here. Retrieval
-- uses a tenant's ANN indexes only when this registry names them and PostgreSQL marks them valid;
-- every other tenant gets the exact scan.
DROP INDEX IF EXISTS tenant_knowledge_full_hnsw;
DROP INDEX IF EXISTS tenant_knowledge_tldr_hnsw;

CREATE TABLE tenant_ann_indexes (
    tenant_id             text        PRIMARY KEY CHECK (tenant_id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    index_names           text[]      NOT NULL CHECK (cardinality(index_names) > 0),
    chunk_count_at_build  integer     NOT NULL,
    built_at              timestamptz NOT NULL DEFAULT now()
);
