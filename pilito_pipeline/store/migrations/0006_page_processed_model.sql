-- The embedding model a page's stored chunks were made with: a page is pending when its text
-- changed OR the configured model changed (changing the model re-embeds; nothing else does).
ALTER TABLE pages ADD COLUMN processed_model text;
UPDATE pages p SET processed_model = k.embedding_model
  FROM (SELECT DISTINCT ON (tenant_id, source_id) tenant_id, source_id, embedding_model
          FROM tenant_knowledge WHERE chunk_type = 'website' AND NOT is_parent
         ORDER BY tenant_id, source_id, chunk_index) k
 WHERE k.tenant_id = p.tenant_id AND k.source_id = p.partition_key;
DROP INDEX pages_pending;
CREATE INDEX pages_processable ON pages (id) WHERE status IN ('fetched', 'not_modified') AND partition_registered;
