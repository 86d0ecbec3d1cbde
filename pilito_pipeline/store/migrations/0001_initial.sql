-- Websites, their pages, and the tenant knowledge base (chunks + embeddings).
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE websites (
    id                  bigserial PRIMARY KEY,
    tenant_id           text        NOT NULL CHECK (tenant_id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    url                 text        NOT NULL,
    max_pages           integer     NOT NULL DEFAULT 200 CHECK (max_pages BETWEEN 1 AND 100000),
    max_depth           integer     NOT NULL DEFAULT 5 CHECK (max_depth BETWEEN 0 AND 100),
    include_patterns    text[]      NOT NULL DEFAULT '{}',
    exclude_patterns    text[]      NOT NULL DEFAULT '{}',
    include_subdomains  boolean     NOT NULL DEFAULT false,
    recrawl_interval    interval    NOT NULL DEFAULT '7 days',
    status              text        NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'crawling', 'ready', 'failed', 'disabled')),
    progress            jsonb       NOT NULL DEFAULT '{}',
    last_error          text,
    last_crawled_at     timestamptz,
    crawl_requested_at  timestamptz NOT NULL DEFAULT now(),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, url)
);

CREATE TABLE pages (
    id               bigserial PRIMARY KEY,
    tenant_id        text        NOT NULL,
    website_id       bigint      NOT NULL REFERENCES websites (id) ON DELETE CASCADE,
    url              text        NOT NULL,
    partition_key    text        GENERATED ALWAYS AS ('p' || id::text) STORED,
    partition_registered boolean NOT NULL DEFAULT false,
    status           text        NOT NULL DEFAULT 'discovered'
                     CHECK (status IN ('discovered', 'fetched', 'not_modified', 'skipped', 'failed', 'gone')),
    failure_reason   text,
    http_status      integer,
    depth            integer     NOT NULL DEFAULT 0,
    etag             text,
    last_modified    text,
    title            text,
    language         text,
    links            text[]      NOT NULL DEFAULT '{}',
    document         jsonb,
    content_hash     text,
    processed_hash   text,
    fetched_at       timestamptz,
    last_seen_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (website_id, url)
);
CREATE UNIQUE INDEX pages_partition_key ON pages (partition_key);
CREATE INDEX pages_tenant ON pages (tenant_id);
-- Pages whose extracted text changed since their chunks were written.
CREATE INDEX pages_pending ON pages (website_id, id)
    WHERE status IN ('fetched', 'not_modified') AND content_hash IS DISTINCT FROM processed_hash;

-- One row per chunk position of a source: (tenant, type, source, chunk_index) is the identity,
-- so a page has as many chunks as it needs and two writers can never duplicate one.
CREATE TABLE tenant_knowledge (
    id                  bigserial PRIMARY KEY,
    tenant_id           text        NOT NULL,
    chunk_type          text        NOT NULL CHECK (chunk_type IN ('website', 'manual', 'faq')),
    source_id           text        NOT NULL,
    document_id         text,
    chunk_index         integer     NOT NULL CHECK (chunk_index >= 0),
    total_chunks        integer     NOT NULL,
    is_parent           boolean     NOT NULL DEFAULT false,
    parent_chunk_index  integer,
    section_title       text,
    full_text           text        NOT NULL,
    tldr                text        NOT NULL DEFAULT '',
    word_count          integer     NOT NULL DEFAULT 0,
    search_terms        text[]      NOT NULL DEFAULT '{}',
    tldr_embedding      halfvec({{EMBEDDING_DIMENSION}}),
    full_embedding      halfvec({{EMBEDDING_DIMENSION}}),
    embedding_model     text,
    content_hash        text        NOT NULL,
    metadata            jsonb       NOT NULL DEFAULT '{}',
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tenant_knowledge_chunk_identity UNIQUE (tenant_id, chunk_type, source_id, chunk_index)
);
CREATE INDEX tenant_knowledge_tenant_type ON tenant_knowledge (tenant_id, chunk_type);
CREATE INDEX tenant_knowledge_tenant_document ON tenant_knowledge (tenant_id, document_id);
CREATE INDEX tenant_knowledge_created_at ON tenant_knowledge (created_at);
CREATE INDEX tenant_knowledge_full_hnsw ON tenant_knowledge
    USING hnsw (full_embedding halfvec_cosine_ops) WITH (m = 16, ef_construction = 64);
CREATE INDEX tenant_knowledge_tldr_hnsw ON tenant_knowledge
    USING hnsw (tldr_embedding halfvec_cosine_ops) WITH (m = 16, ef_construction = 64);
