-- Registration order of `pages` partitions, and indexes that express "pending" per tenant.
--
-- Dagster orders dynamic partition keys by registration, and a page run covers a key range in that
-- order. `partition_seq` records the same order in our table (assigned under a lock in the same step
-- as the registration), so the pages sensor builds ranges without reading every partition key.
ALTER TABLE pages ADD COLUMN IF NOT EXISTS partition_seq bigint;
CREATE SEQUENCE IF NOT EXISTS pages_partition_seq;
UPDATE pages p SET partition_seq = o.seq
  FROM (SELECT id, row_number() OVER (ORDER BY id) AS seq FROM pages
         WHERE partition_registered AND partition_seq IS NULL) o
 WHERE p.id = o.id;
SELECT setval('pages_partition_seq', GREATEST((SELECT max(partition_seq) FROM pages), 1));

-- Pages whose text changed since their chunks were written, by tenant in registration order: the
-- sensor's idle tick is an empty index scan, a busy one reads keys, tenant and order only.
CREATE INDEX IF NOT EXISTS pages_pending_text ON pages (tenant_id, partition_seq) INCLUDE (content_hash)
    WHERE status IN ('fetched', 'not_modified') AND partition_registered
      AND content_hash IS DISTINCT FROM processed_hash;
-- Pages whose chunks were made with another embedding model: a range scan either side of the
-- configured model (empty unless the model changed).
CREATE INDEX IF NOT EXISTS pages_processed_model ON pages (processed_model, tenant_id, partition_seq)
    WHERE status IN ('fetched', 'not_modified') AND partition_registered;
-- One tenant's processable pages in registration order: where its next range starts.
CREATE INDEX IF NOT EXISTS pages_processable_by_tenant ON pages (tenant_id, partition_seq)
    WHERE status IN ('fetched', 'not_modified') AND partition_registered;
