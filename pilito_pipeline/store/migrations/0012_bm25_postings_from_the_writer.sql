-- BM25 postings of a bulk first write are built by the writer, not aggregated by the trigger.
--
-- Migration 0010's insert trigger unnests every term occurrence of the statement's chunks and
-- groups them twice (per chunk, then per term): for a first write of 50k chunks (6M occurrences,
-- 4M (term, chunk) pairs) that took longer than writing the chunks themselves (bench_upsert).
-- Now `upsert_sources` (store/knowledge.py) builds the postings of the chunks it inserts (new rows
-- COPYed straight into tenant_knowledge, plus any the merge of changed rows inserts): it counts
-- their terms in numpy (one sort of the occurrences), COPYs the resulting rows into bm25_postings
-- as one segment per call (the rows, arrays in chunk-id order, that bm25_add writes for the same
-- chunks in one statement) and adds the chunks to bm25_tenant_stats, in its own transaction. While
-- it inserts it sets the transaction-local `pilito.bm25_postings_by_writer` to 'on', and the insert
-- trigger below then leaves the statement's rows to it; it clears the setting right after. Every
-- other writer (plain SQL, executemany) leaves the setting unset and is indexed by bm25_add as
-- before; updates and deletes, from every writer, still go through bm25_on_update / bm25_on_delete.
-- Postings and statistics stay exactly what 0010 keeps (store/test_bm25_upkeep.py compares them,
-- and the scores, with a from-scratch recomputation and with bm25_add's rows).
CREATE OR REPLACE FUNCTION bm25_on_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('pilito.bm25_postings_by_writer', true) = 'on' THEN
        RETURN NULL;
    END IF;
    PERFORM bm25_add(ARRAY(SELECT ROW(n.id, n.tenant_id, n.chunk_type, n.search_terms)::bm25_chunk
                             FROM new_rows n WHERE NOT n.is_parent));
    RETURN NULL;
END $$;
