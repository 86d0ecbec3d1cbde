-- English vocabulary vectors, for Persian questions whose answer is an English page.
-- Each tenant's English BM25 terms (in at least two of its English chunks) embedded alone, as
-- queries, with the tenant's embedding model; retrieval maps a Persian query word to its nearest
-- term (retrieval/translate.py) and searches that term in the tenant's English chunks.
-- Kept per tenant, so a vocabulary says nothing about another tenant's pages; tenant ids checked
-- with the rule of every other table (migration 0008).
CREATE TABLE IF NOT EXISTS term_vectors (
    tenant_id  text NOT NULL CONSTRAINT term_vectors_tenant_id_check CHECK (tenant_id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    model      text NOT NULL,
    term       text NOT NULL,
    embedding  halfvec({{EMBEDDING_DIMENSION}}) NOT NULL,
    PRIMARY KEY (tenant_id, model, term)
);

-- When each tenant's vocabulary was last brought up to date (the refresh transaction's start):
-- English chunks written after it are read by the next refresh.
CREATE TABLE IF NOT EXISTS term_vector_refreshes (
    tenant_id     text NOT NULL
                  CONSTRAINT term_vector_refreshes_tenant_id_check CHECK (tenant_id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    model         text NOT NULL,
    refreshed_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, model)
);

CREATE INDEX IF NOT EXISTS tenant_knowledge_english_updated ON tenant_knowledge (tenant_id, updated_at)
    WHERE NOT is_parent AND metadata->>'language' = 'en';
