-- Pages whose page run failed for them alone (chunking raised, the embedding provider refused their
-- texts): one row per page, for the text and model it failed with
-- (store/page_failures.py). The pages sensor leaves a page alone until `retry_at`; after the last
-- attempt `quarantined_at` is set and it waits for `pilito-pipeline retry-pages`. A page stored
-- successfully loses its row in the same transaction; new text or a new model makes the row moot.
CREATE TABLE IF NOT EXISTS page_failures (
    partition_key   text        PRIMARY KEY REFERENCES pages (partition_key) ON DELETE CASCADE,
    tenant_id       text        NOT NULL CONSTRAINT page_failures_tenant_id_check
                                CHECK (tenant_id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    content_hash    text        NOT NULL,
    embedding_model text        NOT NULL,
    attempts        integer     NOT NULL CHECK (attempts > 0),
    reason          text        NOT NULL,
    failed_at       timestamptz NOT NULL DEFAULT now(),
    retry_at        timestamptz,
    quarantined_at  timestamptz,
    CHECK ((retry_at IS NULL) <> (quarantined_at IS NULL))
);
CREATE INDEX IF NOT EXISTS page_failures_tenant ON page_failures (tenant_id);
