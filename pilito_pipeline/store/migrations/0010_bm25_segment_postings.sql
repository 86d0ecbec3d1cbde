-- BM25 postings in segments: one row per (tenant, term, chunk type, segment) holding the term's
-- chunks of that segment as parallel arrays (chunk id, term frequency, chunk length). A segment is
-- what one write statement indexed (a page run's pages, a manual text, one INSERT).
--
-- Migration 0002 kept one row per (tenant, term, chunk) plus a second index on chunk_id: a first
-- write of 50k chunks inserted about a million posting rows into a heap and two btrees, twice the
-- cost of the chunks themselves (bench_upsert), whatever the insert method. Now a write adds one
-- row per distinct term of the statement and tenant, so the rows grow with the batch's vocabulary,
-- not with its chunks; no second index is needed (a chunk's rows are found from its own terms).
-- Scores stay exact: df(term) is the sum of the array lengths of the tenant's rows for that term
-- (retrieval/bm25.py).
--
-- Upkeep stays set-based in the writer's transaction: statement-level triggers pass the statement's
-- changed searchable rows to bm25_add / bm25_remove (one INSERT, or one DELETE + one UPDATE, per
-- statement whatever its size), so every writer (upsert_sources, plain SQL) keeps BM25 exact.
-- A term's segments of a tenant are read together (one index range); a tenant written in many
-- small statements has more, smaller segments: at worst one row per term and chunk, as in 0002.
-- bm25_tenant_stats (N, total length) is kept by the same functions, as before.
DROP TRIGGER IF EXISTS tenant_knowledge_bm25_insert ON tenant_knowledge;
DROP TRIGGER IF EXISTS tenant_knowledge_bm25_update ON tenant_knowledge;
DROP TRIGGER IF EXISTS tenant_knowledge_bm25_delete ON tenant_knowledge;
DROP FUNCTION IF EXISTS bm25_on_insert();
DROP FUNCTION IF EXISTS bm25_on_update();
DROP FUNCTION IF EXISTS bm25_on_delete();
DROP FUNCTION IF EXISTS bm25_add(bm25_chunk[]);
DROP FUNCTION IF EXISTS bm25_remove(bm25_chunk[]);
DROP TYPE IF EXISTS bm25_chunk;
DROP TABLE IF EXISTS bm25_postings;
DROP SEQUENCE IF EXISTS bm25_segments;

CREATE TABLE bm25_postings (
    tenant_id      text      NOT NULL CONSTRAINT bm25_postings_tenant_id_check CHECK (tenant_id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    term           text      NOT NULL,
    chunk_type     text      NOT NULL,
    segment        bigint    NOT NULL,
    chunk_ids      bigint[]  NOT NULL,
    tfs            integer[] NOT NULL,
    chunk_lengths  integer[] NOT NULL,
    CONSTRAINT bm25_postings_parallel_arrays CHECK (
        cardinality(chunk_ids) > 0 AND cardinality(tfs) = cardinality(chunk_ids)
        AND cardinality(chunk_lengths) = cardinality(chunk_ids)),
    PRIMARY KEY (tenant_id, term, chunk_type, segment)
);
CREATE SEQUENCE IF NOT EXISTS bm25_segments;

-- What the upkeep needs of a searchable (non-parent) chunk.
CREATE TYPE bm25_chunk AS (id bigint, tenant_id text, chunk_type text, search_terms text[]);

CREATE FUNCTION bm25_add(chunks bm25_chunk[]) RETURNS void LANGUAGE sql AS $$
    WITH segment AS (SELECT nextval('bm25_segments') AS segment)
    INSERT INTO bm25_postings (tenant_id, term, chunk_type, segment, chunk_ids, tfs, chunk_lengths)
    SELECT tenant_id, term, chunk_type, segment.segment,
           array_agg(id ORDER BY id), array_agg(tf ORDER BY id), array_agg(length ORDER BY id)
      FROM (SELECT c.tenant_id, t.term, c.chunk_type, c.id,
                   count(*)::integer AS tf, cardinality(c.search_terms) AS length
              FROM unnest(chunks) AS c CROSS JOIN LATERAL unnest(c.search_terms) AS t(term)
             GROUP BY c.tenant_id, t.term, c.chunk_type, c.id, cardinality(c.search_terms)) per_chunk
     CROSS JOIN segment
     GROUP BY tenant_id, term, chunk_type, segment.segment
     ORDER BY tenant_id, term, chunk_type;
    INSERT INTO bm25_tenant_stats AS s (tenant_id, chunk_count, total_length)
    SELECT tenant_id, count(*), sum(cardinality(search_terms)) FROM unnest(chunks)
     GROUP BY tenant_id ORDER BY tenant_id
    ON CONFLICT (tenant_id) DO UPDATE
       SET chunk_count = s.chunk_count + EXCLUDED.chunk_count,
           total_length = s.total_length + EXCLUDED.total_length;
$$;

-- A chunk's postings are one entry in one segment row of each of its distinct terms: rows left with
-- no chunk are deleted, the others lose the chunks' entries.
CREATE FUNCTION bm25_remove(chunks bm25_chunk[]) RETURNS void LANGUAGE sql AS $$
    WITH removed AS (
        SELECT c.tenant_id, t.term, c.chunk_type, array_agg(DISTINCT c.id) AS ids
          FROM unnest(chunks) AS c CROSS JOIN LATERAL unnest(c.search_terms) AS t(term)
         GROUP BY c.tenant_id, t.term, c.chunk_type
    ), emptied AS (
        DELETE FROM bm25_postings p USING removed r
         WHERE (p.tenant_id, p.term, p.chunk_type) = (r.tenant_id, r.term, r.chunk_type)
           AND p.chunk_ids <@ r.ids
    )
    UPDATE bm25_postings p
       SET (chunk_ids, tfs, chunk_lengths) = (
           SELECT array_agg(u.id ORDER BY u.n), array_agg(u.tf ORDER BY u.n), array_agg(u.length ORDER BY u.n)
             FROM unnest(p.chunk_ids, p.tfs, p.chunk_lengths) WITH ORDINALITY AS u(id, tf, length, n)
            WHERE u.id <> ALL (r.ids))
      FROM removed r
     WHERE (p.tenant_id, p.term, p.chunk_type) = (r.tenant_id, r.term, r.chunk_type)
       AND p.chunk_ids && r.ids AND NOT p.chunk_ids <@ r.ids;
    UPDATE bm25_tenant_stats s
       SET chunk_count = s.chunk_count - d.chunks, total_length = s.total_length - d.length
      FROM (SELECT tenant_id, count(*) AS chunks, sum(cardinality(search_terms)) AS length
              FROM unnest(chunks) GROUP BY tenant_id) d
     WHERE s.tenant_id = d.tenant_id;
$$;

CREATE FUNCTION bm25_on_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM bm25_add(ARRAY(SELECT ROW(n.id, n.tenant_id, n.chunk_type, n.search_terms)::bm25_chunk
                             FROM new_rows n WHERE NOT n.is_parent));
    RETURN NULL;
END $$;

CREATE FUNCTION bm25_on_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM bm25_remove(ARRAY(SELECT ROW(o.id, o.tenant_id, o.chunk_type, o.search_terms)::bm25_chunk
                                FROM old_rows o WHERE NOT o.is_parent));
    RETURN NULL;
END $$;

-- Only rows whose indexed fields changed are re-indexed (a column list cannot be combined with
-- transition tables, so the comparison is made here): their old postings go, their new ones come.
CREATE FUNCTION bm25_on_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM bm25_remove(ARRAY(
        SELECT ROW(o.id, o.tenant_id, o.chunk_type, o.search_terms)::bm25_chunk
          FROM old_rows o JOIN new_rows n ON n.id = o.id
         WHERE NOT o.is_parent
           AND (n.search_terms, n.is_parent, n.chunk_type, n.tenant_id)
               IS DISTINCT FROM (o.search_terms, o.is_parent, o.chunk_type, o.tenant_id)));
    PERFORM bm25_add(ARRAY(
        SELECT ROW(n.id, n.tenant_id, n.chunk_type, n.search_terms)::bm25_chunk
          FROM new_rows n JOIN old_rows o ON o.id = n.id
         WHERE NOT n.is_parent
           AND (n.search_terms, n.is_parent, n.chunk_type, n.tenant_id)
               IS DISTINCT FROM (o.search_terms, o.is_parent, o.chunk_type, o.tenant_id)));
    RETURN NULL;
END $$;

CREATE TRIGGER tenant_knowledge_bm25_insert AFTER INSERT ON tenant_knowledge
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION bm25_on_insert();
CREATE TRIGGER tenant_knowledge_bm25_update AFTER UPDATE ON tenant_knowledge
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION bm25_on_update();
CREATE TRIGGER tenant_knowledge_bm25_delete AFTER DELETE ON tenant_knowledge
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION bm25_on_delete();

-- Rows written before this migration, in one segment (the statistics are recounted with them).
DELETE FROM bm25_tenant_stats;
SELECT bm25_add(ARRAY(SELECT ROW(k.id, k.tenant_id, k.chunk_type, k.search_terms)::bm25_chunk
                        FROM tenant_knowledge k WHERE NOT k.is_parent));
