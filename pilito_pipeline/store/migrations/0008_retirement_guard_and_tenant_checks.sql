-- Why a crawl retired nothing although it would have retired many pages (the mass-deletion guard,
-- store/pages.py `retire_pages`): set by that crawl, cleared by the next one, which confirms it.
ALTER TABLE websites ADD COLUMN IF NOT EXISTS retirement_hold text;

-- One tenant-id rule (store/tenants.py) in every table holding a tenant id. `$` in a PostgreSQL
-- regular expression is the end of the string (a trailing newline does not match).
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['pages', 'tenant_knowledge', 'bm25_postings', 'bm25_tenant_stats'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_constraint
                        WHERE conrelid = t::regclass AND conname = t || '_tenant_id_check') THEN
            EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (tenant_id ~ %L)',
                           t, t || '_tenant_id_check', '^[A-Za-z0-9_.-]{1,64}$');
        END IF;
    END LOOP;
END
$$;
