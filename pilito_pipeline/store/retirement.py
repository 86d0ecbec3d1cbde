"""The end of a crawl: which pages lose their chunks, decided on evidence, written in one transaction.

A page is retired (its document, chunks and intermediate values go, its state becomes `gone`) when
the crawl found it 404/410 or, after a clean crawl, no longer reached it. A crawl that would retire
more than RETIREMENT_GUARD_SHARE of the site's live pages retires none and says why, until the next
crawl confirms it. Pages that turned noindex, duplicate, non-HTML or unextractable are withdrawn at
once. Everything is written under the lock order of `store.knowledge` (source advisory locks, then
`pages` rows in id order, then chunks), so a page run storing the same pages concurrently either
finishes first (and its chunks are deleted here) or waits and then finds the page retired.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

from pilito_pipeline.store.asset_values import delete_partition_values
from pilito_pipeline.store.knowledge import delete_sources, lock_sources
from pilito_pipeline.store.pages import lock_pages
from pilito_pipeline.store.websites import record_retirement_hold

RETIREMENT_GUARD_SHARE = 0.30
"""A crawl that would retire more than this share of a site's live pages (404/410 included: a
broken deploy answers 404 everywhere) retires none; the next crawl, if it confirms, does."""


@dataclass(frozen=True)
class Retirement:
    """What a crawl's end did with the pages it found gone, no longer linked or not to be indexed."""

    retired: list[str]
    """Partition keys retired now: their chunks and asset values are deleted, their partitions must go."""
    withdrawn: list[str]
    """Partition keys of pages that now say not to index them: chunks and values deleted too."""
    candidates: int
    """Live pages the crawl found gone (404/410) or, after a clean crawl, unlinked."""
    live: int
    """Pages holding a document before the crawl's decision."""
    chunks_deleted: int = 0
    held: str | None = None
    """Why nothing was retired although there were candidates (the mass-deletion guard)."""

    @property
    def removed(self) -> list[str]:
        return [*self.retired, *self.withdrawn]


_LIVE_GONE = "status = 'gone' AND document IS NOT NULL"
_LIVE_UNSEEN = "%(clean)s AND status <> 'gone' AND last_seen_at < %(started)s AND document IS NOT NULL"
_RETIRABLE = (
    "(status = 'gone' AND (document IS NOT NULL OR partition_registered OR processed_hash IS NOT NULL))"
    " OR (%(clean)s AND status <> 'gone' AND last_seen_at < %(started)s)"
)
_WITHDRAWABLE = "status = 'skipped' AND (partition_registered OR processed_hash IS NOT NULL)"


def close_crawl(
    conn: psycopg.Connection,
    website_id: int,
    crawl_started_at: datetime,
    *,
    clean: bool,
    confirms_hold: bool,
    max_share: float = RETIREMENT_GUARD_SHARE,
) -> Retirement:
    """Retire and withdraw what the crawl that started at `crawl_started_at` found, in one
    transaction (a savepoint inside the caller's), and record the hold decision on the website.

    Retired: pages found 404/410 and, when the crawl was `clean` (reached everything it should, no
    failed fetch), those it no longer reached. When that would retire more than `max_share` of the
    site's live pages, nothing is retired unless `confirms_hold` (the previous crawl was held for
    the same reason): the 404/410 pages are kept as `failed` and the reason returned. Pages without
    a document are retired freely.
    """
    params = {"website": website_id, "clean": clean, "started": crawl_started_at}
    with conn.transaction():
        counts = conn.execute(
            f"""
            SELECT min(tenant_id) AS tenant_id, count(*) FILTER (WHERE document IS NOT NULL) AS live,
                   count(*) FILTER (WHERE ({_LIVE_GONE}) OR ({_LIVE_UNSEEN})) AS candidates
            FROM pages WHERE website_id = %(website)s
            """,
            params,
        ).fetchone()
        tenant, live, candidates = counts["tenant_id"], counts["live"], counts["candidates"]
        held = None
        if candidates > max_share * live and not confirms_hold:
            held = (
                f"retirement held: this crawl would retire {candidates} of {live} live pages"
                f" (more than {max_share:.0%}); the next crawl retires them if it finds the same"
            )
            retirable = "false"
        else:
            retirable = _RETIRABLE
        keys = [r["partition_key"] for r in conn.execute(
            f"SELECT partition_key FROM pages WHERE website_id = %(website)s"
            f" AND (({retirable}) OR {_WITHDRAWABLE} OR ({_LIVE_GONE}))",
            params,
        )]
        lock_sources(conn, [(tenant, "website", key) for key in keys])
        lock_pages(conn, keys)
        if held:
            conn.execute(
                f"""
                UPDATE pages SET status = 'failed',
                       failure_reason = COALESCE(failure_reason || ' ', '') || '(' || %(held)s || ')',
                       updated_at = now()
                WHERE website_id = %(website)s AND {_LIVE_GONE}
                """,
                {**params, "held": held},
            )
        retired = [r["partition_key"] for r in conn.execute(
            f"""
            UPDATE pages SET status = 'gone',
                   failure_reason = CASE WHEN status = 'gone' THEN failure_reason
                                         ELSE 'no longer linked from the site' END,
                   links = '{{}}', document = NULL, content_hash = NULL, processed_hash = NULL,
                   processed_model = NULL, partition_registered = false, updated_at = now()
            WHERE website_id = %(website)s AND partition_key = ANY(%(keys)s) AND ({retirable})
            RETURNING partition_key
            """,
            {**params, "keys": keys},
        )]
        withdrawn = [r["partition_key"] for r in conn.execute(
            f"""
            UPDATE pages SET partition_registered = false, processed_hash = NULL, processed_model = NULL,
                   updated_at = now()
            WHERE website_id = %(website)s AND partition_key = ANY(%(keys)s) AND {_WITHDRAWABLE}
            RETURNING partition_key
            """,
            {**params, "keys": keys},
        )]
        removed = [*retired, *withdrawn]
        chunks_deleted = delete_sources(conn, [(tenant, "website", key) for key in removed])
        delete_partition_values(conn, removed)
        record_retirement_hold(conn, website_id, held)
    return Retirement(retired, withdrawn, candidates, live, chunks_deleted, held)
