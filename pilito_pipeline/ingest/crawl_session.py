"""One crawl of one website, written as it goes: crawl/ fetches, text/ extracts, store/ records.

The Dagster asset (`defs/crawl_assets.py`) drives a `CrawlSession`; tests drive it without Dagster.
The session works on an autocommit connection: each crawl outcome is its own short transaction and
no transaction is open while a page is fetched (a robots `Crawl-delay` of 30 s between fetches holds
no lock and no vacuum horizon). Pages with new text are registered as partitions in batches (one
transaction each); the crawl's end (`store.retirement.close_crawl`) is one transaction.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import psycopg

from pilito_pipeline.crawl import CrawlConfig, CrawledPage, PageValidators, crawl_website
from pilito_pipeline.store import pages as page_store
from pilito_pipeline.store import websites as website_store
from pilito_pipeline.store.retirement import Retirement, RetirementPolicy, close_crawl
from pilito_pipeline.text import ExtractionError, document_hash, extract_document

Register = Callable[[psycopg.Connection, list[str]], None]
"""Registers page partition keys (Dagster), inside the transaction that records them."""


def page_record(crawled: CrawledPage, text_seen_at: dict[str, str]) -> page_store.PageRecord:
    """What to store for one crawl outcome; extraction failures become per-page `skipped` records.

    `text_seen_at` maps content hashes to the URL holding that text (stored, or met earlier in this
    crawl): a page with the same text under another URL (`/` and `/index.html`) is skipped as a
    duplicate, not indexed twice.
    """
    record = page_store.PageRecord(
        url=crawled.url,
        depth=crawled.depth,
        status=crawled.outcome,
        http_status=crawled.http_status,
        failure_reason=crawled.reason,
        etag=crawled.etag,
        last_modified=crawled.last_modified,
        links=crawled.links,
    )
    if crawled.outcome != "fetched" or crawled.html is None:
        return record
    try:
        document = extract_document(crawled.html, crawled.url)
    except ExtractionError as exc:
        return page_store.PageRecord(**{**record.__dict__, "status": "skipped", "failure_reason": str(exc)})
    content_hash = document_hash(document)
    first_url = text_seen_at.setdefault(content_hash, crawled.url)
    if first_url != crawled.url:
        return page_store.PageRecord(
            **{**record.__dict__, "status": "skipped", "failure_reason": f"same text as {first_url}"}
        )
    return page_store.PageRecord(
        **{
            **record.__dict__,
            "title": document.title,
            "language": document.language,
            "document": document.to_dict(),
            "content_hash": content_hash,
        }
    )


def crawl_progress(outcomes: Counter[str], known_before: int, max_pages: int, seconds: float) -> dict[str, int | float]:
    """Pages done so far out of the pages known (the last crawl's, or more once passed; never above
    `max_pages`), and the rate."""
    done = sum(outcomes.values())
    return {
        "done": done,
        "known": min(max(known_before, done), max_pages),
        "pages_per_second": round(done / seconds, 2) if seconds > 0 else 0.0,
    }


class CrawlSession:
    """Records one crawl of a website: `crawl` it whole, or `record` each outcome, then `finish` (or
    `fail`)."""

    def __init__(
        self,
        conn: psycopg.Connection,
        website_id: int,
        register: Register,
        *,
        first_batch: int,
        batch: int,
        policy: RetirementPolicy = RetirementPolicy(),
        on_progress: Callable[[dict[str, Any]], None] = lambda progress: None,
    ) -> None:
        if not conn.autocommit:
            raise ValueError("a crawl session needs an autocommit connection (no transaction across fetches)")
        self.conn = conn
        self.register = register
        self.first_batch, self.batch = first_batch, batch
        self.on_progress = on_progress
        self.policy = policy
        self.website = website_store.get_website(conn, website_id)
        self.started_at = website_store.mark_crawl_started(conn, website_id)
        self.outcomes: Counter[str] = Counter()
        self.unregistered: list[str] = []
        self.registered = 0
        # Pages already holding a text keep it, so duplicates resolve the same way on every crawl.
        self.text_seen_at = page_store.stored_text_owners(conn, website_id)
        # Progress is "pages done / pages known": known from the last crawl until this one passes it.
        self.known_before = sum(
            n for status, n in page_store.page_status_counts(conn, website_id).items() if status != "gone"
        )
        self.clock = time.monotonic()

    def stored_validators(self, url: str) -> PageValidators | None:
        """What the last crawls stored about `url` (the crawler's conditional request and links)."""
        stored = page_store.stored_validators(self.conn, self.website.id, url)
        return PageValidators(stored.etag, stored.last_modified, stored.links) if stored else None

    def crawl(
        self, config: CrawlConfig, on_unstored: Callable[[page_store.PageRecord], None] = lambda record: None
    ) -> tuple[Retirement, dict[str, Any]]:
        """Crawl the website, recording each outcome (`on_unstored` hears of the skipped and failed
        pages), then `finish`; a crawl that raises is closed by `fail` and the error goes on."""
        try:
            for crawled in crawl_website(self.website.url, config, self.stored_validators):
                record = self.record(crawled)
                if record.status in ("skipped", "failed"):
                    on_unstored(record)
            return self.finish()
        except Exception as exc:
            self.fail(exc)
            raise

    def record(self, crawled: CrawledPage) -> page_store.PageRecord:
        """Store one crawl outcome (its own transaction); register a batch of partitions when due."""
        record = page_record(crawled, self.text_seen_at)
        self.outcomes[record.status] += 1
        key, needs_partition = page_store.record_page(self.conn, self.website.tenant_id, self.website.id, record)
        if needs_partition:
            self.unregistered.append(key)
        due = self.first_batch if self.registered == 0 else self.batch
        if len(self.unregistered) >= due or sum(self.outcomes.values()) % self.batch == 0:
            self.flush()
        return record

    def flush(self) -> dict[str, Any]:
        """Register the pages waiting for a partition and record the progress, in one transaction."""
        progress = crawl_progress(self.outcomes, self.known_before, self.website.max_pages, self.seconds)
        with self.conn.transaction():
            if self.unregistered:
                self.register(self.conn, self.unregistered)
            website_store.record_crawl_progress(self.conn, self.website.id, {**dict(self.outcomes), **progress})
        self.registered += len(self.unregistered)
        self.unregistered = []
        progress = {**progress, "page_partitions_registered": self.registered}
        self.on_progress(progress)
        return progress

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.clock

    def finish(self) -> tuple[Retirement, dict[str, Any]]:
        """Close the crawl: retire and withdraw on evidence (`close_crawl`), record the outcome. A
        crawl that never gets here (it failed, or its worker died) retires nothing: every page it
        recorded is in a state that holds on its own (a 404 stays `failed` with its chunks)."""
        self.flush()
        # Not reaching a page is evidence only when the crawl reached everything it should have:
        # not cut short by max_pages, and no fetch failed (a failed hub hides the pages below it).
        clean = sum(self.outcomes.values()) < self.website.max_pages and not self.outcomes["failed"]
        retirement = close_crawl(self.conn, self.website.id, self.started_at, clean=clean, policy=self.policy)
        progress = {
            **dict(self.outcomes), "retired": len(retirement.retired), "withdrawn": len(retirement.withdrawn),
            "seconds": round(self.seconds, 2),
            **({"retirement_held": retirement.held} if retirement.held else {}),
        }
        website_store.mark_crawl_finished(self.conn, self.website.id, self.started_at, progress)
        return retirement, progress

    def fail(self, error: BaseException) -> None:
        """Close a crawl that failed: what it recorded stays; nothing is retired."""
        website_store.mark_crawl_finished(
            self.conn, self.website.id, self.started_at, dict(self.outcomes), error=repr(error)
        )
