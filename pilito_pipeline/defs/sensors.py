"""Sensors: new or due websites → crawl runs; pages with new text → batched page runs.

Runs are deduplicated by run keys derived from what they do (a crawl request's timestamp, a page
range's content hashes), so a sensor may see the same state many times and launch it once.
"""


import hashlib
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from pilito_pipeline.defs.crawl_assets import website_crawl
from pilito_pipeline.defs.page_assets import chunk_embeddings, page_chunks, page_content
from pilito_pipeline.defs.recovery import (
    CRAWL_MAX_RUNTIME_SECONDS, MAX_RUNTIME_TAG, PAGE_RUN_MAX_RUNTIME_SECONDS, RECOVERED_TAG, WORKER_GONE,
)
from pilito_pipeline.defs.partitions import TENANT_TAG, pages_partitions, websites_partitions
from pilito_pipeline.defs.resources import DatabaseResource, EmbeddingResource
from pilito_pipeline.store.pages import PendingPage, pending_pages
from pilito_pipeline.store.websites import request_due_crawls, websites_awaiting_crawl

MAX_PAGES_PER_RUN = 200
RETRY_WINDOW_SECONDS = 3600
"""A page range whose run failed is launched again (new run key) in the next window."""
MAX_DEAD_RUN_RELAUNCHES = 3
"""Relaunches at once of a range whose worker died; beyond, the range waits for the next window."""
PAGE_BATCH_TAG = "pilito/page_batch"
"""The range's fingerprint: a range whose run is still queued or running is not launched again."""
ACTIVE_STATUSES = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


@dg.sensor(
    asset_selection=[website_crawl],
    minimum_interval_seconds=10,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Launch a crawl for each newly registered website and each website due for re-crawl.",
)
def website_crawl_sensor(context: dg.SensorEvaluationContext, database: DatabaseResource) -> dg.SensorResult:
    with database.connect() as conn:
        request_due_crawls(conn)
        conn.commit()
        websites = websites_awaiting_crawl(conn)
    known = set(context.instance.get_dynamic_partitions(websites_partitions.name))
    new_keys = [w.partition_key for w in websites if w.partition_key not in known]
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"crawl:{w.partition_key}:{w.crawl_requested_at.isoformat()}",
                partition_key=w.partition_key,
                tags={TENANT_TAG: w.tenant_id, MAX_RUNTIME_TAG: str(CRAWL_MAX_RUNTIME_SECONDS)},
            )
            for w in websites
        ],
        dynamic_partitions_requests=[websites_partitions.build_add_request(new_keys)] if new_keys else [],
    )


@dataclass(frozen=True)
class PageRange:
    tenant_id: str
    pages: tuple[PendingPage, ...]
    embedding_model: str = ""

    @property
    def first_key(self) -> str:
        return self.pages[0].partition_key

    @property
    def last_key(self) -> str:
        return self.pages[-1].partition_key

    @property
    def fingerprint(self) -> str:
        """What the run will do: the same pages, texts and model give the same fingerprint."""
        digest = hashlib.sha256(self.embedding_model.encode())
        for page in self.pages:
            digest.update(f"{page.partition_key}={page.content_hash};".encode())
        return f"{self.first_key}-{self.last_key}-{digest.hexdigest()[:16]}"

    def run_key(self, window: int, dead_runs: int = 0) -> str:
        """Same work in the same window → same key → launched once; each run of it whose worker died
        (up to MAX_DEAD_RUN_RELAUNCHES) gives a new key, so the work is launched again at once."""
        revived = f":revived{min(dead_runs, MAX_DEAD_RUN_RELAUNCHES)}" if dead_runs else ""
        return f"pages:{self.fingerprint}:{window}{revived}"


def page_ranges(
    pending: Sequence[PendingPage],
    partition_order: Sequence[str],
    max_pages: int = MAX_PAGES_PER_RUN,
    embedding_model: str = "",
) -> Iterator[PageRange]:
    """Split pending pages into runs of consecutive partition keys, one tenant per run.

    A range run covers every key between its ends in the partition order, so a range only grows
    while the next key in that order is also pending and belongs to the same tenant.
    """
    by_key = {p.partition_key: p for p in pending}
    current: list[PendingPage] = []
    for key in partition_order:
        page = by_key.get(key)
        if current and (page is None or page.tenant_id != current[0].tenant_id or len(current) >= max_pages):
            yield PageRange(current[0].tenant_id, tuple(current), embedding_model)
            current = []
        if page is not None:
            current.append(page)
    if current:
        yield PageRange(current[0].tenant_id, tuple(current), embedding_model)


@dg.sensor(
    asset_selection=[page_content, page_chunks, chunk_embeddings],
    minimum_interval_seconds=10,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Launch chunk+embedding runs over contiguous ranges of pages whose text or embedding model changed.",
)
def pending_pages_sensor(
    context: dg.SensorEvaluationContext, database: DatabaseResource, embedder: EmbeddingResource
) -> dg.SensorResult:
    model = embedder.model_name
    with database.connect() as conn:
        pending = pending_pages(conn, model)
    if not pending:
        return dg.SensorResult(skip_reason="no page has new text or a stale embedding model")
    order = context.instance.get_dynamic_partitions(pages_partitions.name)
    window = int(time.time() // RETRY_WINDOW_SECONDS)
    ranges = list(page_ranges(pending, order, embedding_model=model))
    active = {
        run.tags.get(PAGE_BATCH_TAG)
        for run in context.instance.get_runs(
            filters=dg.RunsFilter(statuses=ACTIVE_STATUSES, tags={PAGE_BATCH_TAG: [r.fingerprint for r in ranges]})
        )
    }
    dead = Counter(
        run.tags[PAGE_BATCH_TAG]
        for run in context.instance.get_runs(
            filters=dg.RunsFilter(tags={PAGE_BATCH_TAG: [r.fingerprint for r in ranges], RECOVERED_TAG: WORKER_GONE})
        )
    )
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=page_range.run_key(window, dead[page_range.fingerprint]),
                tags={
                    ASSET_PARTITION_RANGE_START_TAG: page_range.first_key,
                    ASSET_PARTITION_RANGE_END_TAG: page_range.last_key,
                    TENANT_TAG: page_range.tenant_id,
                    PAGE_BATCH_TAG: page_range.fingerprint,
                    MAX_RUNTIME_TAG: str(PAGE_RUN_MAX_RUNTIME_SECONDS),
                },
            )
            for page_range in ranges
            if page_range.fingerprint not in active
        ]
    )
