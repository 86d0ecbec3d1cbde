"""The crawl asset: one materialisation per website partition.

Fetches the site (crawl/), extracts each HTML page's document (text/), stores pages as they come,
and registers pages with new text as `pages` partitions in batches, so the pages sensor can launch
chunk/embedding runs over contiguous key ranges. Pages gone from the site (on evidence, see
`store.pages.retire_pages`) or now not to be indexed (`withdraw_skipped_pages`) lose their chunks
and their partition.
"""


import time
from collections import Counter

import dagster as dg

from pilito_pipeline.crawl import CrawledPage, PageValidators, crawl_website
from pilito_pipeline.defs.partitions import (
    REGISTRATION_BATCH,
    pages_partitions,
    register_page_partitions,
    registration_batch_size,
    websites_partitions,
)
from pilito_pipeline.defs.resources import CrawlerResource, DatabaseResource
from pilito_pipeline.store import pages as page_store
from pilito_pipeline.store import websites as website_store
from pilito_pipeline.store.knowledge import delete_sources
from pilito_pipeline.text import ExtractionError, document_hash, extract_document

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


@dg.asset(
    partitions_def=websites_partitions,
    group_name="crawl",
    kinds={"python", "postgres"},
    description="Crawl a registered website: pages table rows and `pages` partitions for new text.",
)
def website_crawl(
    context: dg.AssetExecutionContext, database: DatabaseResource, crawler: CrawlerResource
) -> dg.MaterializeResult:
    website_id = website_store.website_id_from_partition_key(context.partition_key)
    with database.connect() as conn:
        website = website_store.get_website(conn, website_id)
        started_at = website_store.mark_crawl_started(conn, website_id)
        conn.commit()

        outcomes: Counter[str] = Counter()
        unregistered: list[str] = []
        registered = 0
        # Pages already holding a text keep it, so duplicates resolve the same way on every crawl.
        text_seen_at = page_store.stored_text_owners(conn, website_id)
        clock = time.monotonic()
        # Progress is "pages done / pages known": known from the last crawl until this one passes it.
        known_before = sum(n for status, n in page_store.page_status_counts(conn, website_id).items() if status != "gone")

        def known(url: str) -> PageValidators | None:
            stored = page_store.stored_validators(conn, website_id, url)
            return PageValidators(stored.etag, stored.last_modified, stored.links) if stored else None

        def register_partitions() -> None:
            nonlocal registered
            if unregistered:
                register_page_partitions(context.instance, conn, unregistered)
                registered += len(unregistered)
                unregistered.clear()
            so_far = crawl_progress(outcomes, known_before, website.max_pages, time.monotonic() - clock)
            website_store.record_crawl_progress(conn, website_id, {**dict(outcomes), **so_far})
            conn.commit()
            context.log.info(
                f"progress {website.partition_key}: {so_far['done']}/{so_far['known']} pages"
                f" ({so_far['pages_per_second']} pages/s, {registered} page partitions registered)"
            )
            context.log_event(dg.AssetObservation(
                asset_key=context.asset_key, partition=context.partition_key,
                metadata={**so_far, "page_partitions_registered": registered},
            ))

        try:
            for crawled in crawl_website(website.url, crawler.config_for(website), known):
                record = page_record(crawled, text_seen_at)
                outcomes[record.status] += 1
                key, needs_partition = page_store.record_page(conn, website.tenant_id, website_id, record)
                if record.status in ("skipped", "failed"):
                    context.log.info(f"{record.status} {record.url}: {record.failure_reason}")
                if needs_partition:
                    unregistered.append(key)
                batch = registration_batch_size(registered)
                if len(unregistered) >= batch or sum(outcomes.values()) % REGISTRATION_BATCH == 0:
                    register_partitions()
            register_partitions()
        except Exception as exc:
            conn.rollback()
            website_store.mark_crawl_finished(conn, website_id, started_at, dict(outcomes), error=repr(exc))
            conn.commit()
            raise

        # Not reaching a page is evidence only when the crawl reached everything it should have:
        # not cut short by max_pages, and no fetch failed (a failed hub hides the pages below it).
        clean = sum(outcomes.values()) < website.max_pages and not outcomes["failed"]
        retirement = page_store.retire_pages(
            conn, website_id, started_at, clean=clean, confirms_hold=website.retirement_hold is not None
        )
        withdrawn = page_store.withdraw_skipped_pages(conn, website_id)
        removed = [*retirement.retired, *withdrawn]
        deleted_chunks = delete_sources(conn, [(website.tenant_id, "website", key) for key in removed])
        website_store.record_retirement_hold(conn, website_id, retirement.held)
        progress = {
            **dict(outcomes), "retired": len(retirement.retired), "withdrawn": len(withdrawn),
            "seconds": round(time.monotonic() - clock, 2),
            **({"retirement_held": retirement.held} if retirement.held else {}),
        }
        website_store.mark_crawl_finished(conn, website_id, started_at, progress)
        conn.commit()
    if retirement.held:
        context.log.warning(f"{website.url}: {retirement.held}")

    for key in removed:  # after commit: a page's partition only goes once its chunks are gone
        if context.instance.has_dynamic_partition(pages_partitions.name, key):
            context.instance.delete_dynamic_partition(pages_partitions.name, key)

    context.log.info(f"crawled {website.url} for tenant {website.tenant_id}: {progress}")
    return dg.MaterializeResult(
        metadata={
            "tenant": website.tenant_id,
            "url": dg.MetadataValue.url(website.url),
            **{f"pages_{name}": dg.MetadataValue.int(n) for name, n in sorted(outcomes.items())},
            "pages_retired": dg.MetadataValue.int(len(retirement.retired)),
            "pages_withdrawn": dg.MetadataValue.int(len(withdrawn)),
            "retirement_held": dg.MetadataValue.text(retirement.held or "no"),
            "chunks_deleted": dg.MetadataValue.int(deleted_chunks),
            "duration_s": dg.MetadataValue.float(progress["seconds"]),
            "pages_per_second": dg.MetadataValue.float(
                round(sum(outcomes.values()) / progress["seconds"], 2) if progress["seconds"] else 0.0),
        }
    )
