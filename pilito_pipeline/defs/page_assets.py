"""Page assets over the `pages` partitions: chunks → embeddings.

Runs cover a contiguous range of up to MAX_PAGES_PER_RUN page keys of one tenant (sensors.py; a UI
backfill's runs, split the same way by `BackfillPolicy.multi_run`, hand their embedding over to
such runs) and every asset handles the whole range at once:
one model load, one batched embedding pass and one database transaction per run instead of one run
per page. Values are dicts keyed by page key.
"""


import time
import warnings
from dataclasses import dataclass

import dagster as dg

from pilito_pipeline.defs.partitions import BACKFILL_TAG, MAX_PAGES_PER_RUN, pages_partitions
from pilito_pipeline.defs.resources import DatabaseResource, EmbeddingResource
from pilito_pipeline.embed import EmbeddingRequestError, embed_rows
from pilito_pipeline.ingest import knowledge_rows
from pilito_pipeline.retries import EMBEDDING_STEP_RETRIES, EMBEDDING_STEP_RETRY_DELAY_SECONDS
from pilito_pipeline.store.knowledge import PageVersion, store_pages
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

PAGE_ASSET = dict(
    partitions_def=pages_partitions,
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=MAX_PAGES_PER_RUN),
    group_name="pages",
)


@dg.asset(**PAGE_ASSET, io_manager_key="page_values_io_manager", kinds={"postgres", "python"})
def page_chunks(
    context: dg.AssetExecutionContext, database: DatabaseResource, embedder: EmbeddingResource
) -> dict[str, PageChunks]:
    """Structure-aware parent/child chunks with a TL;DR each, of the extracted document the crawl
    stored for each page.

    Reading the document is part of this asset, not one of its own: Dagster records every asset of
    a range run once per page, so an extra asset costs every page run an event per page.
    The embedding model starts loading meanwhile (seconds), for `chunk_embeddings` next (not in a
    UI backfill's run: its `chunk_embeddings` hands the embedding over to the tenants' runs).
    """
    if BACKFILL_TAG not in context.run.tags:
        embedder.start_loading()
    started = time.perf_counter()
    keys = list(context.partition_keys)
    with database.connect() as conn:
        pages = load_pages(conn, keys)
    missing = sorted(set(keys) - pages.keys())
    if missing:
        context.log.warning(f"{len(missing)} pages have no document any more (retired): {missing[:10]}")
    result = {
        key: PageChunks(page, chunk_document(ExtractedDocument.from_dict(page.document)))
        for key, page in pages.items()
    }
    chunks = sum(len(pc.chunks) for pc in result.values())
    context.add_output_metadata(
        {
            "pages": len(result),
            "pages_without_document": len(missing),
            "chunks": chunks,
            "chunks_per_page": round(chunks / max(len(result), 1), 2),
            "seconds": round(time.perf_counter() - started, 3),
        }
    )
    return result


@dg.asset(
    **PAGE_ASSET,
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
    backs off; a refused request (bad key, bad input) fails without retries.

    The asset that makes the change records it: one transaction (`store_pages`) makes each page
    hold exactly its current chunks and marks it processed for the text and model they came from,
    so page state never runs ahead of (or behind) the data; pages a crawl retired or changed since
    `page_chunks` read them are skipped (metadata `pages_skipped_stale`), never written back.
    Nothing loads this asset's value (retrieval reads the table), so it has no IO manager; ANN
    indexes are `tenant_ann_indexes`'.
    A UI backfill's run hands its pages over to the tenants' own runs (`hand_over_backfill`).
    """
    if BACKFILL_TAG in context.run.tags:
        return hand_over_backfill(context, database, embedder.model_name, list(context.partition_keys))
    started = time.perf_counter()
    provider = embedder.get_provider()
    knowledge = {
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
    all_rows = [row for pk in knowledge.values() for row in pk.rows]
    with database.connect(autocommit=True) as conn:  # the reuse lookup: no transaction held while embedding
        try:
            counts = embed_rows(all_rows, provider, reuse_from=conn, tldr=embedder.embed_tldr)
        except EmbeddingRequestError as exc:  # a bad key or input: retrying cannot help
            raise dg.Failure(description=f"embedding request refused: {exc}", allow_retries=False) from exc
    with database.connect() as conn:
        stored = store_pages(conn, knowledge, provider.model_name)
    stats = stored.stats
    if stored.skipped:
        context.log.warning(
            f"{len(stored.skipped)} pages not written: retired or changed by a crawl since this run read"
            f" them (they stay as the crawl left them): {stored.skipped[:10]}"
        )
    seconds = time.perf_counter() - started
    rates = {
        "pages_per_second": round(len(knowledge) / seconds, 2),
        "embeddings_per_second": round(counts.embedded / seconds, 2),
    }
    context.log.info(
        f"{len(knowledge)} pages, {len(all_rows)} chunks: {counts.embedded} embeddings computed,"
        f" {counts.reused} reused in {seconds:.1f}s ({rates['pages_per_second']} pages/s,"
        f" {rates['embeddings_per_second']} embeddings/s)"
    )
    return dg.MaterializeResult(
        metadata={
            "pages": len(knowledge),
            "chunks": len(all_rows),
            "embeddings_computed": counts.embedded,
            "embeddings_reused": counts.reused,
            "model": provider.model_name,
            "rows_inserted": stats.inserted,
            "rows_updated": stats.updated,
            "rows_unchanged": stats.unchanged,
            "rows_deleted": stats.deleted,
            "pages_skipped_stale": len(stored.skipped),
            "seconds": round(seconds, 3),
            **rates,
        }
    )


HANDOVER_POLL_SECONDS = 5.0
"""How often a UI backfill's run looks whether the tenants' runs have processed its pages."""


def hand_over_backfill(
    context: dg.AssetExecutionContext, database: DatabaseResource, embedding_model: str, keys: list[str]
) -> dg.MaterializeResult:
    """A UI backfill's run covers up to 200 pages in partition order, of any tenants, without their
    tags: embedding them itself would bypass the per-tenant limits and could take pages a tenant's
    run has. Its pages are made pending again instead; the pages sensor gives them tenant-tagged runs
    of at most 200 pages, fairly and each page in one run, and this run waits until they are all
    processed (unchanged texts reuse their embeddings; the chunks stay searchable meanwhile). Then
    the partitions are materialized, so the backfill completes. Pages that cannot be processed (no
    text any more) are not waited for; a tenant run that keeps failing fails this run at its
    `dagster/max_runtime`."""
    started = time.perf_counter()
    with database.connect() as conn:
        handed = request_reprocessing(conn, keys)
        conn.commit()
    context.log.info(
        f"UI backfill: {sum(handed.values())} of {len(keys)} pages handed to their tenants' page runs"
        f" ({', '.join(f'{tenant}: {n}' for tenant, n in sorted(handed.items()))}); waiting for them"
    )
    while True:
        with database.connect() as conn:
            left = count_pending(conn, keys, embedding_model)
        if not left:
            break
        time.sleep(HANDOVER_POLL_SECONDS)
    return dg.MaterializeResult(
        metadata={
            "pages_handed_over": sum(handed.values()),
            "tenants": ", ".join(sorted(handed)),
            "processed_by": "the tenants' page runs",
            "seconds": round(time.perf_counter() - started, 3),
        }
    )
