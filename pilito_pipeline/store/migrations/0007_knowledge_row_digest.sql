-- A digest of everything a knowledge row stores, computed by the writer: re-upserting unchanged
-- rows compares digests and ships nothing (no COPY of their vectors, no row or index touched).
-- Rows written before this migration have none and are rewritten once, with the same content.
ALTER TABLE tenant_knowledge ADD COLUMN row_digest text;
