-- BM25 index of tenant_knowledge, kept in step with it by statement-level triggers.
--
-- bm25_postings: one row per (tenant, term, chunk) with the term frequency; the chunk's length (its
--   number of terms) and chunk type ride along so a query reads the postings of its terms from one
--   index (index-only) and never touches tenant_knowledge until the final top-k.
-- bm25_tenant_stats: per tenant, the number of searchable chunks and their total length (N, avgdl),
--   changed by signed deltas (a statement may remove more than it adds, so no sign CHECK).
-- Document frequencies are counted from the postings at query time (same index, same cost as
-- reading the postings), so no per-term counter rows become write hot spots.
-- Source of terms: tenant_knowledge.search_terms (text.tokenize(section_title + ' ' + full_text)).
-- Parent rows (is_parent) are never indexed.

CREATE TABLE bm25_postings (
    tenant_id     text    NOT NULL,
    term          text    NOT NULL,
    chunk_id      bigint  NOT NULL,
    chunk_type    text    NOT NULL,
    tf            integer NOT NULL CHECK (tf > 0),
    chunk_length  integer NOT NULL CHECK (chunk_length > 0),
    PRIMARY KEY (tenant_id, term, chunk_id) INCLUDE (chunk_type, tf, chunk_length)
);
CREATE INDEX bm25_postings_chunk ON bm25_postings (chunk_id);

CREATE TABLE bm25_tenant_stats (
    tenant_id     text   PRIMARY KEY,
    chunk_count   bigint NOT NULL DEFAULT 0,
    total_length  bigint NOT NULL DEFAULT 0
);

-- Transition tables are visible only inside the trigger function itself, so each function spells
-- out its statements. "add" = postings + stats for searchable rows; "remove" = the reverse.
CREATE FUNCTION bm25_on_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bm25_postings (tenant_id, term, chunk_id, chunk_type, tf, chunk_length)
    SELECT n.tenant_id, t.term, n.id, n.chunk_type, count(*), cardinality(n.search_terms)
      FROM new_rows n CROSS JOIN LATERAL unnest(n.search_terms) AS t(term)
     WHERE NOT n.is_parent
     GROUP BY n.tenant_id, t.term, n.id, n.chunk_type, cardinality(n.search_terms);
    INSERT INTO bm25_tenant_stats AS s (tenant_id, chunk_count, total_length)
    SELECT tenant_id, count(*), sum(cardinality(search_terms)) FROM new_rows
     WHERE NOT is_parent GROUP BY tenant_id ORDER BY tenant_id
    ON CONFLICT (tenant_id) DO UPDATE
       SET chunk_count = s.chunk_count + EXCLUDED.chunk_count,
           total_length = s.total_length + EXCLUDED.total_length;
    RETURN NULL;
END $$;

CREATE FUNCTION bm25_on_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM bm25_postings p USING old_rows o WHERE p.chunk_id = o.id AND NOT o.is_parent;
    UPDATE bm25_tenant_stats s
       SET chunk_count = s.chunk_count - d.chunks, total_length = s.total_length - d.length
      FROM (SELECT tenant_id, count(*) AS chunks, sum(cardinality(search_terms)) AS length
              FROM old_rows WHERE NOT is_parent GROUP BY tenant_id) d
     WHERE s.tenant_id = d.tenant_id;
    RETURN NULL;
END $$;

-- Only rows whose indexed fields changed are re-indexed: the behaviour of UPDATE OF search_terms
-- (a column list cannot be combined with transition tables, so the comparison is made here).
CREATE FUNCTION bm25_on_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM bm25_postings p USING old_rows o, new_rows n
     WHERE p.chunk_id = o.id AND n.id = o.id AND NOT o.is_parent
       AND (n.search_terms, n.is_parent, n.chunk_type, n.tenant_id)
           IS DISTINCT FROM (o.search_terms, o.is_parent, o.chunk_type, o.tenant_id);
    WITH old_part AS (
        SELECT o.tenant_id, -1 AS chunks, -cardinality(o.search_terms) AS length
          FROM old_rows o JOIN new_rows n ON n.id = o.id
         WHERE NOT o.is_parent
           AND (n.search_terms, n.is_parent, n.chunk_type, n.tenant_id)
               IS DISTINCT FROM (o.search_terms, o.is_parent, o.chunk_type, o.tenant_id)
    ), new_part AS (
        SELECT n.tenant_id, 1 AS chunks, cardinality(n.search_terms) AS length
          FROM new_rows n JOIN old_rows o ON o.id = n.id
         WHERE NOT n.is_parent
           AND (n.search_terms, n.is_parent, n.chunk_type, n.tenant_id)
               IS DISTINCT FROM (o.search_terms, o.is_parent, o.chunk_type, o.tenant_id)
    ), added AS (
        INSERT INTO bm25_postings (tenant_id, term, chunk_id, chunk_type, tf, chunk_length)
        SELECT n.tenant_id, t.term, n.id, n.chunk_type, count(*), cardinality(n.search_terms)
          FROM new_rows n JOIN old_rows o ON o.id = n.id
         CROSS JOIN LATERAL unnest(n.search_terms) AS t(term)
         WHERE NOT n.is_parent
           AND (n.search_terms, n.is_parent, n.chunk_type, n.tenant_id)
               IS DISTINCT FROM (o.search_terms, o.is_parent, o.chunk_type, o.tenant_id)
         GROUP BY n.tenant_id, t.term, n.id, n.chunk_type, cardinality(n.search_terms)
    )
    INSERT INTO bm25_tenant_stats AS s (tenant_id, chunk_count, total_length)
    SELECT tenant_id, sum(chunks), sum(length)
      FROM (SELECT * FROM old_part UNION ALL SELECT * FROM new_part) d
     GROUP BY tenant_id ORDER BY tenant_id
    ON CONFLICT (tenant_id) DO UPDATE
       SET chunk_count = s.chunk_count + EXCLUDED.chunk_count,
           total_length = s.total_length + EXCLUDED.total_length;
    RETURN NULL;
END $$;

CREATE TRIGGER tenant_knowledge_bm25_insert AFTER INSERT ON tenant_knowledge
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION bm25_on_insert();
CREATE TRIGGER tenant_knowledge_bm25_update AFTER UPDATE ON tenant_knowledge
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION bm25_on_update();
CREATE TRIGGER tenant_knowledge_bm25_delete AFTER DELETE ON tenant_knowledge
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION bm25_on_delete();

-- Rows written before this migration.
INSERT INTO bm25_postings (tenant_id, term, chunk_id, chunk_type, tf, chunk_length)
SELECT k.tenant_id, t.term, k.id, k.chunk_type, count(*), cardinality(k.search_terms)
  FROM tenant_knowledge k CROSS JOIN LATERAL unnest(k.search_terms) AS t(term)
 WHERE NOT k.is_parent
 GROUP BY k.tenant_id, t.term, k.id, k.chunk_type, cardinality(k.search_terms);
INSERT INTO bm25_tenant_stats (tenant_id, chunk_count, total_length)
SELECT tenant_id, count(*), sum(cardinality(search_terms)) FROM tenant_knowledge
 WHERE NOT is_parent GROUP BY tenant_id;
