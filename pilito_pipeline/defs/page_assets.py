"""Page assets over the `pages` partitions: chunks → embeddings.

Runs cover a contiguous range of up to MAX_PAGES_PER_RUN page keys of one tenant (sensors.py; any
other run of these assets, a UI materialization or a backfill's run, hands its pages over to such
runs, so every page is processed under the per-tenant limits and range rules) and every asset
handles the whole range at once:
one model load, one batched embedding pass and one database transaction per run instead of one run
per page. Values are dicts keyed by page key.

A page that fails alone (its chunking raises, the provider refuses its texts) is recorded with its
reason (store/page_failures.py: retried with backoff, quarantined after `retries.PAGE_ATTEMPTS`)
and the run goes on with the others; only a provider that is down or refuses everything fails the run.
"""


import time
import warnings
from dataclasses import dataclass

import dagster as dg

from pilito_pipeline.defs.partitions import BACKFILL_TAG, MAX_PAGES_PER_RUN, is_tenant_page_run, pages_partitions
from pilito_pipeline.defs.resources import DatabaseResource, EmbeddingResource
from pilito_pipeline.embed import EmbeddingProvider, ProviderMisconfigured, embed_groups
from pilito_pipeline.embed.batch import EmbedCounts
from pilito_pipeline.ingest.sources import knowledge_rows
from pilito_pipeline.retries import (
    EMBEDDING_STEP_RETRIES, EMBEDDING_STEP_RETRY_DELAY_SECONDS, PAGE_ATTEMPTS, PAGE_RETRY_DELAY_SECONDS,
)
from pilito_pipeline.store.knowledge import PageVersion, StoredPages, store_pages
from pilito_pipeline.store.page_failures import PageFailure, RecordedFailure, quarantined_pages, record_page_failures
from pilito_pipeline.store.pages import PendingPage, count_pending, load_pages, request_reprocessing
from pilito_pipeline.text import Chunk, ExtractedDocument, chunk_document


@dataclass(frozen=True)
class PageChunks:
    page: PendingPage
    chunks: list[Chunk]


# Dagster marks the `backfill_policy` parameter beta; it is how a UI backfill is split into runs of
# MAX_PAGES_PER_RUN pages. Dagster is pinned (requirements.lock) and the behaviour is tested, so this
# warning, printed for every page asset by every process that loads the definitions, is filtered.
warnings.filterwarnings(
    "ignore", r"Parameter `backfill_policy` of function `asset` is currently in beta", dg.BetaWarning
)

PAGE_ASSET_ARGS = dict(
    partitions_def=pages_partitions,
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=MAX_PAGES_PER_RUN),
    group_name="pages",
)


@dg.asset(**PAGE_ASSET_ARGS, io_manager_key="page_values_io_manager", kinds={"postgres", "python"})
def page_chunks(
    context: dg.AssetExecutionContext, database: DatabaseResource, embedder: EmbeddingResource
) -> dict[str, PageChunks]:
    """Structure-aware parent/child chunks with a TL;DR each, of the extracted document the crawl
    stored for each page.

    Reading the document is part of this asset, not one of its own: Dagster records every asset of
    a range run once per page, so an extra asset costs every page run an event per page.
    The embedding model starts loading meanwhile (seconds), for `chunk_embeddings` next. A run the
    pages sensor did not launch (a UI materialization or backfill) chunks nothing: its
    `chunk_embeddings` hands the pages over to the tenants' runs.
    """
    if not is_tenant_page_run(context.run.tags):  # its pages go to their tenants' runs (hand_over_pages)
        context.add_output_metadata({"pages": 0, "processed_by": "the tenants' page runs"})
        return {}
    embedder.start_loading()
    started = time.perf_counter()
    keys = list(context.partition_keys)
    with database.connect() as conn:
        pages = load_pages(conn, keys)
    missing = sorted(set(keys) - pages.keys())
    if missing:
        context.log.warning(f"{len(missing)} pages have no document any more (retired): {missing[:10]}")
    result, failures = chunk_pages(pages)
    recorded = record_failures(context, database, failures, embedder.model_name)
    chunks = sum(len(pc.chunks) for pc in result.values())
    context.add_output_metadata(
        {
            "pages": len(result),
            "pages_without_document": len(missing),
            "chunks": chunks,
            "chunks_per_page": round(chunks / max(len(result), 1), 2),
            "seconds": round(time.perf_counter() - started, 3),
            **failure_metadata(failures, recorded),
        }
    )
    return result


def chunk_pages(pages: dict[str, PendingPage]) -> tuple[dict[str, PageChunks], dict[str, PageFailure]]:
    """Each page's chunks; a page whose stored document cannot be read back or chunked (whatever
    the exception) is a failure of that page alone, with the exception as its reason."""
    chunked: dict[str, PageChunks] = {}
    failures: dict[str, PageFailure] = {}
    for key, page in pages.items():
        try:
            chunked[key] = PageChunks(page, chunk_document(ExtractedDocument.from_dict(page.document)))
        except Exception as exc:  # noqa: BLE001 - recorded per page (page_failures), never swallowed
            failures[key] = PageFailure(page.tenant_id, page.content_hash, f"chunking failed: {type(exc).__name__}: {exc}")
    return chunked, failures


def record_failures(
    context: dg.AssetExecutionContext, database: DatabaseResource, failures: dict[str, PageFailure], model: str
) -> list[RecordedFailure]:
    """Record the run's failed pages (retries.py's backoff and quarantine) and log each with its reason."""
    if not failures:
        return []
    with database.connect() as conn:
        recorded = record_page_failures(
            conn, failures, model, max_attempts=PAGE_ATTEMPTS, first_delay_seconds=PAGE_RETRY_DELAY_SECONDS
        )
        conn.commit()
    for record in recorded:
        then = "quarantined (pilito-pipeline retry-pages releases it)" if record.quarantined else (
            f"tried again after {record.retry_at:%H:%M:%S}")
        context.log.warning(
            f"page {record.partition_key} failed (attempt {record.attempts} of {PAGE_ATTEMPTS}), {then}:"
            f" {failures[record.partition_key].reason}"
        )
    return recorded


def failure_metadata(failures: dict[str, PageFailure], recorded: list[RecordedFailure]) -> dict[str, object]:
    """What the UI shows of a run's failed pages: how many, which and why, and how many it quarantined."""
    return {
        "pages_failed": len(failures),
        "pages_quarantined": sum(1 for r in recorded if r.quarantined),
        **({"failed_pages": dg.MetadataValue.md("\n".join(
            f"- `{key}` ({failure.reason[:200]})" for key, failure in sorted(failures.items())[:20]
        ))} if failures else {}),
    }


@dg.asset(
    **PAGE_ASSET_ARGS,
    kinds={"pgvector"},
    retry_policy=dg.RetryPolicy(
        max_retries=EMBEDDING_STEP_RETRIES, delay=EMBEDDING_STEP_RETRY_DELAY_SECONDS,
        backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS,
    ),  # the numbers: pilito_pipeline/retries.py
)
def chunk_embeddings(
    context: dg.AssetExecutionContext,
    page_chunks: dict[str, PageChunks],
    database: DatabaseResource,
    embedder: EmbeddingResource,
) -> dg.MaterializeResult:
    """Embeddings of every chunk (TL;DR and full text) of the run's pages, in shared batches, written
    into the knowledge base together with the pages' state.

    Chunks whose text and model are unchanged reuse their stored embeddings: no provider call.
    When the provider is unavailable (or its circuit open) this fails fast and the retry policy
    backs off; a provider that refuses everything (bad key, unknown model) fails without retries.
    A page whose own texts are refused is recorded as failed and the others are stored.

    The asset that makes the change records it: one transaction (`store_pages`) makes each page
    hold exactly its current chunks and marks it processed for the text and model they came from,
    so page state never runs ahead of (or behind) the data; pages a crawl retired or changed since
    `page_chunks` read them are skipped (metadata `pages_skipped_stale`), never written back.
    Nothing loads this asset's value (retrieval reads the table), so it has no IO manager; ANN
    indexes are `tenant_ann_indexes`'.
    Any other run (a UI materialization or backfill) hands its pages over to the tenants' own runs
    (`hand_over_pages`).
    """
    if not is_tenant_page_run(context.run.tags):
        return hand_over_pages(context, database, embedder.model_name, list(context.partition_keys))
    started = time.perf_counter()
    provider = embedder.get_provider()
    knowledge = page_versions(page_chunks)
    counts, refused = embed_pages(knowledge, provider, database, tldr=embedder.embed_tldr)
    failures = {key: PageFailure(knowledge[key].tenant_id, knowledge[key].content_hash, reason)
                for key, reason in refused.items()}
    knowledge = {key: page for key, page in knowledge.items() if key not in refused}
    with database.connect() as conn:
        stored = store_pages(conn, knowledge, provider.model_name)
    if stored.skipped:
        context.log.warning(
            f"{len(stored.skipped)} pages not written: retired or changed by a crawl since this run read"
            f" them (they stay as the crawl left them): {stored.skipped[:10]}"
        )
    recorded = record_failures(context, database, failures, provider.model_name)
    metadata = embedding_metadata(knowledge, counts, stored, provider.model_name, time.perf_counter() - started)
    context.log.info(
        f"{metadata['pages']} pages, {metadata['chunks']} chunks: {counts.embedded} embeddings computed,"
        f" {counts.reused} reused in {metadata['seconds']:.1f}s ({metadata['pages_per_second']} pages/s,"
        f" {metadata['embeddings_per_second']} embeddings/s)"
    )
    return dg.MaterializeResult(metadata={**metadata, **failure_metadata(failures, recorded)})


def page_versions(page_chunks: dict[str, PageChunks]) -> dict[str, PageVersion]:
    """Each page's knowledge rows, with the tenant and content hash its chunks came from."""
    return {
        key: PageVersion(
            pc.page.tenant_id,
            pc.page.content_hash,
            knowledge_rows(
                pc.page.tenant_id, "website", key, pc.page.url, pc.chunks,
                {"url": pc.page.url, "website_id": pc.page.website_id},
            ),
        )
        for key, pc in page_chunks.items()
    }


def embed_pages(knowledge: dict[str, PageVersion], provider: EmbeddingProvider, database: DatabaseResource,
                *, tldr: bool) -> tuple[EmbedCounts, dict[str, str]]:
    """Embed the pages' rows in shared batches, reusing stored embeddings; (counts, refused pages)."""
    with database.connect(autocommit=True) as conn:  # the reuse lookup: no transaction held while embedding
        try:
            return embed_groups({key: page.rows for key, page in knowledge.items()}, provider,
                                reuse_from=conn, tldr=tldr)
        except ProviderMisconfigured as exc:  # a bad key or model: retrying cannot help
            raise dg.Failure(description=f"embedding request refused: {exc}", allow_retries=False) from exc


def embedding_metadata(knowledge: dict[str, PageVersion], counts: EmbedCounts, stored: StoredPages, model: str,
                       seconds: float) -> dict[str, object]:
    stats = stored.stats
    return {
        "pages": len(knowledge),
        "chunks": sum(len(page.rows) for page in knowledge.values()),
        "embeddings_computed": counts.embedded,
        "embeddings_reused": counts.reused,
        "model": model,
        "rows_inserted": stats.inserted,
        "rows_updated": stats.updated,
        "rows_unchanged": stats.unchanged,
        "rows_deleted": stats.deleted,
        "pages_skipped_stale": len(stored.skipped),
        "seconds": round(seconds, 3),
        "pages_per_second": round(len(knowledge) / seconds, 2),
        "embeddings_per_second": round(counts.embedded / seconds, 2),
    }


HANDOVER_POLL_SECONDS = 5.0
"""How often a UI backfill's run looks whether the tenants' runs have processed its pages."""


def hand_over_pages(
    context: dg.AssetExecutionContext, database: DatabaseResource, embedding_model: str, keys: list[str]
) -> dg.MaterializeResult:
    """A run of the page assets not launched by the pages sensor (a partition materialized from the
    UI, a UI backfill's run of up to 200 pages in partition order, of any tenants) carries no tenant
    tags: embedding its pages itself would bypass the per-tenant limits and could take pages a
    tenant's run has. Its pages are made pending again instead; the pages sensor gives them
    tenant-tagged runs of at most 200 pages, fairly and each page in one run (unchanged texts reuse
    their embeddings; the chunks stay searchable meanwhile). A single run returns at once (it holds
    no run slot meanwhile); a backfill's run (one at a time, dagster.yaml) waits until they are all
    processed, then the partitions are materialized, so the backfill completes when its work is done. Pages that cannot be processed (no
    text any more) are not waited for, nor are quarantined ones (a page failing alone is
    quarantined within minutes, `retries.PAGE_ATTEMPTS`); a tenant run that keeps failing fails this
    run at its `dagster/max_runtime`."""
    started = time.perf_counter()
    with database.connect() as conn:
        handed = request_reprocessing(conn, keys)
        conn.commit()
    context.log.info(
        f"{sum(handed.values())} of {len(keys)} pages handed to their tenants' page runs"
        f" ({', '.join(f'{tenant}: {n}' for tenant, n in sorted(handed.items()))})"
        + ("; waiting for them" if BACKFILL_TAG in context.run.tags else "")
    )
    while BACKFILL_TAG in context.run.tags:
        with database.connect() as conn:
            left = count_pending(conn, keys, embedding_model)
        if not left:
            break
        time.sleep(HANDOVER_POLL_SECONDS)
    with database.connect() as conn:
        quarantined = [page.partition_key for page in quarantined_pages(conn, embedding_model, partition_keys=keys)]
    if quarantined:
        context.log.warning(f"{len(quarantined)} pages are quarantined (pilito-pipeline status): {quarantined[:10]}")
    return dg.MaterializeResult(
        metadata={
            "pages_handed_over": sum(handed.values()),
            "quarantined_pages_not_waited_for": len(quarantined),
            "tenants": ", ".join(sorted(handed)),
            "processed_by": "the tenants' page runs",
            "seconds": round(time.perf_counter() - started, 3),
        }
    )
