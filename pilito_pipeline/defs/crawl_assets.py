"""The crawl asset: one materialisation per website partition.

A thin layer over `pilito_pipeline.ingest.crawl_session.CrawlSession`: it fetches the site (crawl/),
extracts each HTML page's document (text/), stores pages as they come, and registers pages with new
text as `pages` partitions in batches, so the pages sensor can launch chunk/embedding runs over
contiguous key ranges. Pages gone from the site or now not to be indexed lose their chunks at the
crawl's end (`store.retirement.close_crawl`), and then their partition here.
"""

from collections import Counter
from collections.abc import Callable
from typing import Any

import dagster as dg
import psycopg

from pilito_pipeline.ingest.crawl_session import CrawlSession
from pilito_pipeline.defs.partitions import (
    FIRST_REGISTRATION_BATCH,
    REGISTRATION_BATCH,
    drop_page_partitions,
    register_page_partitions,
    websites_partitions,
)
from pilito_pipeline.defs.resources import CrawlerResource, DatabaseResource
from pilito_pipeline.store import websites as website_store
from pilito_pipeline.store.retirement import Retirement
from pilito_pipeline.store.websites import Website


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
    with database.connect(autocommit=True) as conn:
        session = CrawlSession(
            conn, website_id, lambda tx, keys: register_page_partitions(context.instance, tx, keys),
            first_batch=FIRST_REGISTRATION_BATCH, batch=REGISTRATION_BATCH,
            policy=crawler.retirement_policy(), on_progress=progress_reporter(context),
        )
        retirement, summary = session.crawl(
            crawler.config_for(session.website),
            on_unstored=lambda record: context.log.info(f"{record.status} {record.url}: {record.failure_reason}"),
        )
        kept = drop_removed_partitions(context.instance, conn, website_id, retirement)
    website = session.website
    if retirement.held:
        context.log.warning(f"{website.url}: {retirement.held}")
    if kept:
        context.log.info(f"{len(kept)} partitions of removed pages kept until the runs naming them end: {kept[:10]}")
    context.log.info(f"crawled {website.url} for tenant {website.tenant_id}: {summary}")
    return dg.MaterializeResult(metadata=crawl_metadata(website, session.outcomes, retirement, summary))


def progress_reporter(context: dg.AssetExecutionContext) -> Callable[[dict[str, Any]], None]:
    """The crawl's progress as a log line and an observation of the website partition."""

    def report(so_far: dict[str, Any]) -> None:
        context.log.info(
            f"progress {context.partition_key}: {so_far['done']}/{so_far['known']} pages"
            f" ({so_far['pages_per_second']} pages/s, {so_far['page_partitions_registered']} page partitions registered)"
        )
        context.log_event(dg.AssetObservation(
            asset_key=context.asset_key, partition=context.partition_key, metadata=so_far,
        ))

    return report


def drop_removed_partitions(
    instance: dg.DagsterInstance, conn: psycopg.Connection, website_id: int, retirement: Retirement
) -> list[str]:
    """After the crawl's commit (a page's partition only goes once its chunks are gone): drop the
    partitions of removed pages and of those kept by earlier crawls; the ones a run not yet ended
    still names are kept for the next crawl, and returned."""
    to_drop = sorted({*retirement.removed, *website_store.partitions_to_drop(conn, website_id)})
    kept = drop_page_partitions(instance, to_drop)
    website_store.keep_partitions_to_drop(conn, website_id, kept)
    return kept


def crawl_metadata(
    website: Website, outcomes: Counter[str], retirement: Retirement, summary: dict[str, Any]
) -> dict[str, dg.MetadataValue | str]:
    """The materialisation's metadata: pages per outcome, retirement, duration and rate."""
    return {
        "tenant": website.tenant_id,
        "url": dg.MetadataValue.url(website.url),
        **{f"pages_{name}": dg.MetadataValue.int(n) for name, n in sorted(outcomes.items())},
        "pages_retired": dg.MetadataValue.int(len(retirement.retired)),
        "pages_withdrawn": dg.MetadataValue.int(len(retirement.withdrawn)),
        "retirement_held": dg.MetadataValue.text(retirement.held or "no"),
        "chunks_deleted": dg.MetadataValue.int(retirement.chunks_deleted),
        "duration_s": dg.MetadataValue.float(summary["seconds"]),
        "pages_per_second": dg.MetadataValue.float(
            round(sum(outcomes.values()) / summary["seconds"], 2) if summary["seconds"] else 0.0),
    }
