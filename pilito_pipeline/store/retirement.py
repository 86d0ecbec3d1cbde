"""The end of a crawl: which pages lose their chunks, decided on evidence, written in one transaction.

Evidence that a live page (one holding a document) is gone, gathered by the crawl that just ended:

- it answered 404/410 (recorded `failed` with that HTTP status until now, see `pages.record_page`);
- the crawl was clean (not cut short by `max_pages`, no failed fetch) and did not reach it;
- by age, for sites the crawl never covers completely (larger than `max_pages`, or with a fetch
  failing somewhere): it went unreached in `unseen_crawls` consecutive finished crawls spanning at
  least `unseen_days` days (Nutch's rule: gone after repeated misses at intervals). A crawl that
  reaches the page, whatever it answers, starts the count again.

The mass-deletion guard: a crawl whose candidates are more than `max_share` of the site's live pages
retires none of them; it stores the set it held (`websites.retirement_held_pages`) and says why. A
later crawl confirms the hold only if every held page is a candidate again ("the same pages missing
again": the new candidate set covers the held set); then the held pages are retired, whatever their
share. Candidates beyond the held set are new evidence and go through the guard themselves. A hold
the next crawl does not confirm (a page came back) is replaced by that crawl's own decision. So no
crawl retires more than `max_share` of a site without two consecutive crawls missing the same pages.

Pages that turned noindex, duplicate, non-HTML or unextractable are withdrawn at once (the page said
so). Everything is written under the lock order of `store.knowledge` (source advisory locks, then
`pages` rows in id order, then chunks), so a page run storing the same pages concurrently either
finishes first (and its chunks are deleted here) or waits and then finds the page retired.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from pilito_pipeline.store.knowledge import delete_sources, lock_sources
from pilito_pipeline.store.pages import lock_pages

RETIREMENT_GUARD_SHARE = 0.30
"""A crawl that would retire more than this share of a site's live pages (404/410 included: a
broken deploy answers 404 everywhere) retires none; the next crawl, if it confirms, does."""


@dataclass(frozen=True)
class RetirementPolicy:
    """How much evidence retirement needs (settings `CRAWL_RETIRE_UNSEEN_CRAWLS`, `..._DAYS`)."""

    max_share: float = RETIREMENT_GUARD_SHARE
    unseen_crawls: int = 3
    """Consecutive finished crawls that must miss a page before it is retired by age..."""
    unseen_days: float = 14.0
    """...spanning at least this many days since the first of them began."""


@dataclass(frozen=True)
class Retirement:
    """What a crawl's end did with the pages it found gone, no longer linked or not to be indexed."""

    retired: list[str]
    """Partition keys retired now: their chunks and asset values are deleted, their partitions must go."""
    withdrawn: list[str]
    """Partition keys of pages that now say not to index them: chunks and values deleted too."""
    candidates: int
    """Live pages the crawl found gone (404/410), unlinked after a clean crawl, or unseen by age."""
    live: int
    """Pages holding a document before the crawl's decision."""
    chunks_deleted: int = 0
    held: str | None = None
    """Why candidates were kept (the mass-deletion guard), until a crawl misses the same pages."""
    held_pages: list[str] | None = None

    @property
    def removed(self) -> list[str]:
        return [*self.retired, *self.withdrawn]


_WITHDRAWABLE = "status = 'skipped' AND (partition_registered OR processed_hash IS NOT NULL)"
_FOUND_GONE = "status = 'failed' AND http_status IN (404, 410) AND last_seen_at >= %(started)s"
_BOOKKEEPING = "status = 'gone' AND document IS NULL AND (partition_registered OR processed_hash IS NOT NULL)"
"""Pages without text that still count as registered or processed: retired freely."""


def close_crawl(
    conn: psycopg.Connection,
    website_id: int,
    crawl_started_at: datetime,
    *,
    clean: bool,
    policy: RetirementPolicy = RetirementPolicy(),
) -> Retirement:
    """Retire and withdraw what the crawl that started at `crawl_started_at` found (the module's
    rules), in one transaction (a savepoint inside the caller's), and record the hold on the website."""
    params = {"website": website_id, "started": crawl_started_at}
    with conn.transaction():
        site = conn.execute(
            "SELECT tenant_id, retirement_held_pages FROM websites WHERE id = %s", (website_id,)
        ).fetchone()
        tenant = site["tenant_id"]
        keys = _pages_to_decide(conn, params)
        lock_sources(conn, [(tenant, "website", key) for key in keys])
        lock_pages(conn, keys)
        live = conn.execute(
            "SELECT count(*) AS n FROM pages WHERE website_id = %s AND document IS NOT NULL", (website_id,)
        ).fetchone()["n"]
        reasons = _retirement_reasons(conn, params, clean, policy)
        retire, held_pages, held = _decide(set(reasons), set(site["retirement_held_pages"] or ()), live, policy)
        if held:
            _note_hold_on_pages(conn, params, held, held_pages)
        retired = _retire(conn, params, {key: reasons[key] for key in retire})
        withdrawn = _withdraw(conn, params, keys)
        removed = [*retired, *withdrawn]
        chunks_deleted = delete_sources(conn, [(tenant, "website", key) for key in removed])
        conn.execute(
            "UPDATE websites SET retirement_hold = %s, retirement_held_pages = %s WHERE id = %s",
            (held, held_pages, website_id),
        )
    return Retirement(retired, withdrawn, len(reasons), live, chunks_deleted, held, held_pages)


def _pages_to_decide(conn: psycopg.Connection, params: dict[str, Any]) -> list[str]:
    """Partition keys of the pages the crawl's end may retire or withdraw (to lock before deciding)."""
    return [r["partition_key"] for r in conn.execute(
        f"""
        SELECT partition_key FROM pages WHERE website_id = %(website)s
           AND ((document IS NOT NULL AND (last_seen_at < %(started)s OR ({_FOUND_GONE})))
                OR {_WITHDRAWABLE} OR {_BOOKKEEPING})
        """,
        params,
    )]


def _retirement_reasons(
    conn: psycopg.Connection, params: dict[str, Any], clean: bool, policy: RetirementPolicy
) -> dict[str, str]:
    """The candidates and why: found gone (404/410), unlinked after a clean crawl, or unseen by age;
    counts one more miss for every live page the crawl did not reach."""
    reasons = {r["partition_key"]: r["reason"] for r in conn.execute(
        f"SELECT partition_key, failure_reason AS reason FROM pages"
        f" WHERE website_id = %(website)s AND document IS NOT NULL AND {_FOUND_GONE}",
        params,
    )}
    for page in conn.execute(
        """
        UPDATE pages SET unseen_crawls = unseen_crawls + 1, unseen_since = COALESCE(unseen_since, %(started)s)
        WHERE website_id = %(website)s AND document IS NOT NULL AND last_seen_at < %(started)s
        RETURNING partition_key, unseen_crawls, unseen_since,
                  unseen_since <= %(started)s - make_interval(secs => %(days)s * 86400) AS old_enough
        """,
        {**params, "days": policy.unseen_days},
    ).fetchall():
        if clean:
            reasons[page["partition_key"]] = "no longer linked from the site"
        elif page["unseen_crawls"] >= policy.unseen_crawls and page["old_enough"]:
            reasons[page["partition_key"]] = (
                f"not reached by the last {page['unseen_crawls']} crawls"
                f" (since {page['unseen_since']:%Y-%m-%d})"
            )
    return reasons


def _note_hold_on_pages(conn: psycopg.Connection, params: dict[str, Any], held: str, held_pages: list[str]) -> None:
    """Append why they were kept to the failure reason of the held pages found gone."""
    conn.execute(
        f"""
        UPDATE pages SET failure_reason = COALESCE(failure_reason || ' ', '') || '(' || %(held)s || ')',
               updated_at = now()
        WHERE website_id = %(website)s AND partition_key = ANY(%(keys)s) AND {_FOUND_GONE}
        """,
        {**params, "held": held, "keys": held_pages},
    )


def _retire(conn: psycopg.Connection, params: dict[str, Any], reasons: dict[str, str]) -> list[str]:
    """Mark the pages to retire (and the bookkeeping-only ones) gone with their reason; their keys."""
    keys = sorted(reasons)
    return [r["partition_key"] for r in conn.execute(
        f"""
        UPDATE pages SET status = 'gone', failure_reason = COALESCE(v.reason, pages.failure_reason),
               links = '{{}}', document = NULL, content_hash = NULL, processed_hash = NULL,
               processed_model = NULL, partition_registered = false, unseen_crawls = 0,
               unseen_since = NULL, updated_at = now()
        FROM (SELECT key, reason FROM unnest(%(keys)s::text[], %(reasons)s::text[]) AS v(key, reason)
              UNION ALL
              SELECT partition_key, NULL FROM pages WHERE website_id = %(website)s AND {_BOOKKEEPING}) v
        WHERE pages.website_id = %(website)s AND pages.partition_key = v.key
        RETURNING pages.partition_key
        """,
        {**params, "keys": keys, "reasons": [reasons[key] for key in keys]},
    )]


def _withdraw(conn: psycopg.Connection, params: dict[str, Any], keys: list[str]) -> list[str]:
    """Withdraw the pages among `keys` that now say not to index them (skipped); their keys."""
    return [r["partition_key"] for r in conn.execute(
        f"""
        UPDATE pages SET partition_registered = false, processed_hash = NULL, processed_model = NULL,
               updated_at = now()
        WHERE website_id = %(website)s AND partition_key = ANY(%(keys)s) AND {_WITHDRAWABLE}
        RETURNING partition_key
        """,
        {**params, "keys": keys},
    )]


def _decide(
    candidates: set[str], held_before: set[str], live: int, policy: RetirementPolicy
) -> tuple[set[str], list[str] | None, str | None]:
    """(pages to retire, pages to hold, why held) under the guard and its confirmation rule."""
    confirmed = held_before if held_before and held_before <= candidates else set()
    new = candidates - confirmed
    if len(new) <= policy.max_share * live:
        return candidates, None, None
    held = (
        f"retirement held: this crawl would retire {len(new)} of {live} live pages"
        f" (more than {policy.max_share:.0%}); the next crawl retires them if the same pages are missing again"
    )
    return confirmed, sorted(new), held
