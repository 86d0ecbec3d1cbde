-- Retirement that means it (store/retirement.py).
-- The pages a held retirement held: only the same pages missing again confirm it.
ALTER TABLE websites ADD COLUMN IF NOT EXISTS retirement_held_pages text[];
-- `pages` partitions of retired pages that a run not yet ended still names as the end of its range:
-- Dagster resolves a range run's keys from them, so they are deleted by a later crawl.
ALTER TABLE websites ADD COLUMN IF NOT EXISTS partitions_to_drop text[] NOT NULL DEFAULT '{}';
-- How long a live page has gone unseen: a site larger than max_pages (never a clean crawl) retires
-- a page unseen in K consecutive crawls over at least D days. Reset whenever a crawl reaches it.
ALTER TABLE pages ADD COLUMN IF NOT EXISTS unseen_crawls integer NOT NULL DEFAULT 0;
ALTER TABLE pages ADD COLUMN IF NOT EXISTS unseen_since timestamptz;
-- A 404/410 is `failed` (with its HTTP status) until the crawl's end retires it: `gone` is written
-- only together with the deletion of the page's chunks. Rows a crawl that died left `gone` with
-- their document become that; the next crawl fetches them again.
UPDATE pages SET status = 'failed' WHERE status = 'gone' AND document IS NOT NULL;
