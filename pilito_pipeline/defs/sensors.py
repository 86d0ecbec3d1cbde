"""Sensors: new or due websites → crawl runs; pages with new text → page runs, fairly per tenant.

Page runs are chosen per tenant: tenants with the oldest pending registration first, at most
`MAX_PAGES_PER_RUN` pages each, at most `MAX_TENANTS_PER_TICK` tenants a tick. A new run takes
only pending pages outside the ranges of the tenant's queued and running page runs (each run's tags
name its range in registration order), so each page is in at most one queued or running run by
construction. A tenant has at most `MAX_ACTIVE_PAGE_RUNS` page runs queued or running: one runs
(dagster.yaml) while the next waits in the queue with the pages registered since, so it starts the
moment the first ends instead of a sensor pass later; while the crawl still registers pages, that
next run is queued only once it is full, so the crawl's later batches join it instead of a run
each, and so is every run of a site still being crawled while `PAGE_RUN_SLOTS` page runs already
wait in the queue. A new site's first run, while its crawl goes on and the queue is not backed up,
is at most `FIRST_RUN_PAGES`. A failed page run is launched again after `RETRY_DELAY_SECONDS` (at
once if its worker died): its pages are still pending. A page that failed alone in a run that went
on (store/page_failures.py) is left out of ranges while it backs off or is quarantined, so a range
stops before it and the tenant's next range starts after it: it never holds its tenant back.

On a deep queue (more than `PAGE_RUN_SLOTS` page runs would wait), tenants with no page run
queued or running share runs over their unbroken registration order (`shared_ranges`), one shared
run waiting at a time, so the sites crawled while it waits join the next: one process start and
model load for several small sites. Such a run's tags name all its tenants
(`partitions.run_tenants`), and while it is queued or running none of them gets another page run,
so each tenant still has at most one page run running, as the queue's per-tenant limit gives every
other run.
"""

import hashlib
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import dagster as dg

from pilito_pipeline.defs.crawl_assets import website_crawl
from pilito_pipeline.defs.page_assets import chunk_embeddings, page_chunks
from pilito_pipeline.defs.partitions import (
    MAX_PAGES_PER_RUN,
    RUN_KIND_TAG,
    SHARED_RUN_TAG,
    crawl_run_tags,
    page_run_tags,
    run_partition_seqs,
    run_tenants,
    websites_partitions,
)
from pilito_pipeline.defs.recovery import (
    CRAWL_MAX_RUNTIME_SECONDS,
    ENDED_UNFINISHED,
    MAX_RUNTIME_TAG,
    PAGE_RUN_MAX_RUNTIME_SECONDS,
    RECOVERED_TAG,
    WORKER_GONE,
)
from pilito_pipeline.defs.resources import DatabaseResource, EmbeddingResource
from pilito_pipeline.store.pages import (
    PendingKey,
    has_pending_pages,
    pending_pages,
    tenants_still_crawling,
)
from pilito_pipeline.store.websites import request_due_crawls, websites_awaiting_crawl

MAX_TENANTS_PER_TICK = 100
"""Page runs requested per tick at most; the tenants left over are the oldest of the next tick."""
RETRY_DELAY_SECONDS = 60
"""A tenant whose page run failed waits this long before its pages get a new run."""
FIRST_RUN_PAGES = 5
"""A new site's first page run: small, so its first pages are searchable within seconds."""
MAX_ACTIVE_PAGE_RUNS = 2
"""Page runs of one tenant queued or running at once: the running one and the next."""
PAGE_RUN_SLOTS = 2
"""Page runs the queue runs at once (dagster.yaml, `pilito/run_kind: pages`; a test compares them):
with this many page runs waiting, a new one would not start soon."""
SENSOR_INTERVAL_SECONDS = 1
"""Every pass of the sensor daemon (it loops every 5 s): a minimum interval equal to the loop's skipped
every other pass (a tick started a few milliseconds late is "under 5 s"), so new work waited 10 s."""
ACTIVE_STATUSES = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


@dg.sensor(
    asset_selection=[website_crawl],
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Launch a crawl for each newly registered website and each website due for re-crawl.",
)
def website_crawl_sensor(context: dg.SensorEvaluationContext, database: DatabaseResource) -> dg.SensorResult:
    with database.connect() as conn:
        request_due_crawls(conn)
        conn.commit()
        websites = websites_awaiting_crawl(conn)
    keys = [w.partition_key for w in websites]
    registered = context.instance.get_existing_dynamic_partitions(websites_partitions.name, keys) if keys else set()
    new_keys = [key for key in keys if key not in registered]
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"crawl:{w.partition_key}:{w.crawl_requested_at.isoformat()}",
                partition_key=w.partition_key,
                tags={**crawl_run_tags(w.tenant_id), MAX_RUNTIME_TAG: str(CRAWL_MAX_RUNTIME_SECONDS)},
            )
            for w in websites
        ],
        dynamic_partitions_requests=[websites_partitions.build_add_request(new_keys)] if new_keys else [],
    )


@dataclass(frozen=True)
class PageRange:
    pages: tuple[PendingKey, ...]
    embedding_model: str = ""
    shared: bool = False
    """Made by `shared_ranges` (its run carries `SHARED_RUN_TAG`)."""

    @property
    def tenant_ids(self) -> list[str]:
        """Every tenant whose pages the range holds, in the order of their first page."""
        return list(dict.fromkeys(page.tenant_id for page in self.pages))

    @property
    def first(self) -> tuple[str, int]:
        """(key, registration order) of the range's first page."""
        return self.pages[0].partition_key, self.pages[0].partition_seq

    @property
    def last(self) -> tuple[str, int]:
        return self.pages[-1].partition_key, self.pages[-1].partition_seq

    @property
    def fingerprint(self) -> str:
        """What the run will do: the same pages, texts and model give the same fingerprint."""
        digest = hashlib.sha256(self.embedding_model.encode())
        for page in self.pages:
            digest.update(f"{page.partition_key}={page.content_hash};".encode())
        return f"{self.first[0]}-{self.last[0]}-{digest.hexdigest()[:16]}"

    def run_key(self, generation: int) -> str:
        """The sensor cursor's generation: a tick evaluated again after a crash requests the same
        keys (launched once); work requested again in a later tick gets a new key."""
        return f"pages:{self.fingerprint}:{generation}"


def per_tenant_ranges(
    pending: Sequence[PendingKey],
    max_pages: int = MAX_PAGES_PER_RUN,
    embedding_model: str = "",
    new_tenants: Collection[str] = (),
    crawling_with_open_run: Collection[str] = (),
) -> Iterator[PageRange]:
    """Each tenant's first range: its oldest pending pages while their registration order is unbroken,
    at most `FIRST_RUN_PAGES` for a tenant with nothing searchable yet (its first answers come sooner).
    A tenant in `crawling_with_open_run` (a page run queued or running while its crawl still registers pages) gets
    a range only when it is full: a partial one would leave the pages registered next to a run of
    their own, and every run costs seconds to launch and to load the model.

    A range run covers every key between its ends in Dagster's partition order, which
    `partition_seq` records; a gap in it is a key of another tenant, or one not pending, so the
    range stops there.
    """
    by_tenant: dict[str, list[PendingKey]] = {}
    for page in sorted(pending, key=lambda p: p.partition_seq):
        by_tenant.setdefault(page.tenant_id, []).append(page)
    for tenant_id, pages in by_tenant.items():
        cap = min(max_pages, FIRST_RUN_PAGES) if tenant_id in new_tenants else max_pages
        taken = [pages[0]]
        for page in pages[1:]:
            if len(taken) >= cap or page.partition_seq != taken[-1].partition_seq + 1:
                break
            taken.append(page)
        if tenant_id not in crawling_with_open_run or len(taken) >= cap:
            yield PageRange(tuple(taken), embedding_model)


def shared_ranges(
    pending: Sequence[PendingKey], max_pages: int = MAX_PAGES_PER_RUN, embedding_model: str = ""
) -> Iterator[PageRange]:
    """Runs of pages of any tenants while their registration order is unbroken, at most `max_pages`
    each: on a deep queue, small sites registered one after the other share a run, and its process
    start and model load. The caller passes only pages of tenants without a page run queued or
    running (and not still crawled), and holds those tenants while the run is queued or running.
    """
    taken: list[PendingKey] = []
    for page in sorted(pending, key=lambda p: p.partition_seq):
        if taken and (len(taken) >= max_pages or page.partition_seq != taken[-1].partition_seq + 1):
            yield PageRange(tuple(taken), embedding_model, shared=True)
            taken = []
        taken.append(page)
    if taken:
        yield PageRange(tuple(taken), embedding_model, shared=True)


@dataclass(frozen=True)
class ActivePageRuns:
    tenants_held_back: set[str]
    """Tenants to leave out this tick: `MAX_ACTIVE_PAGE_RUNS` page runs queued or running, one that
    failed within the retry delay (unless its worker died: that work is launched again at once), or
    a queued or running page run whose range is unknown (a run from before ranges were tagged)."""
    ranges: list[tuple[str, int, int]]
    """(tenant, first, last) registration order of every queued or running page run."""
    queued: int
    """Page runs created or queued, not started yet."""
    shared_queued: int
    """Of those, shared runs (`SHARED_RUN_TAG`)."""


def active_page_runs(instance: dg.DagsterInstance, now: datetime) -> ActivePageRuns:
    active = instance.get_runs(filters=dg.RunsFilter(statuses=ACTIVE_STATUSES, tags={RUN_KIND_TAG: "pages"}))
    failed = instance.get_runs(
        filters=dg.RunsFilter(
            statuses=list(ENDED_UNFINISHED),
            tags={RUN_KIND_TAG: "pages"},
            updated_after=now - timedelta(seconds=RETRY_DELAY_SECONDS),
        )
    )
    held = {tenant for run in failed if run.tags.get(RECOVERED_TAG) != WORKER_GONE for tenant in run_tenants(run.tags)}
    ranges: list[tuple[str, int, int]] = []
    per_tenant: Counter[str] = Counter()
    for run in active:
        tenants = run_tenants(run.tags)
        per_tenant.update(tenants)
        seqs = run_partition_seqs(run.tags)
        if seqs is None or run.tags.get(SHARED_RUN_TAG):  # a shared run's tenants get no other page run
            held.update(tenants)
        if seqs is not None:
            ranges.extend((tenant, *seqs) for tenant in tenants)
    held |= {tenant for tenant, count in per_tenant.items() if count >= MAX_ACTIVE_PAGE_RUNS}
    waiting = [run for run in active if run.status in (dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.QUEUED)]
    return ActivePageRuns(held, ranges, len(waiting), sum(1 for run in waiting if run.tags.get(SHARED_RUN_TAG)))


def plan_page_ranges(
    pending: Sequence[PendingKey], active: ActivePageRuns, crawling: dict[str, bool], embedding_model: str
) -> list[PageRange]:
    """The page runs to launch, oldest registration first.

    While they and the page runs already waiting fit `PAGE_RUN_SLOTS`, each tenant gets its own
    (`per_tenant_ranges`; a new site's first is small): they start at once. On a deeper queue, a run over
    part of a site still being crawled, or behind its tenant's own run, waits to be full (or for the
    crawl's end), so the pages registered meanwhile join it; and the tenants with no page run at all
    share runs over their unbroken registration order (`shared_ranges`): each would wait in the queue
    anyway, and one run of several small sites pays one process start and model load instead of one
    each. While a shared run still waits to start, the next waits too, so the sites crawled
    meanwhile join it.
    """
    with_runs = {tenant for tenant, _, _ in active.ranges}
    new = {t for t, is_new in crawling.items() if is_new and t not in with_runs}
    own = list(per_tenant_ranges(pending, embedding_model=embedding_model, new_tenants=new,
                            crawling_with_open_run=set(crawling) & with_runs))
    if active.queued + len(own) <= PAGE_RUN_SLOTS:
        return own
    alone = set(crawling) | with_runs
    ranges = [
        *per_tenant_ranges([p for p in pending if p.tenant_id in alone], embedding_model=embedding_model,
                      crawling_with_open_run=set(crawling)),
        *(() if active.shared_queued else shared_ranges(
            [p for p in pending if p.tenant_id not in alone], embedding_model=embedding_model)),
    ]
    return sorted(ranges, key=lambda r: r.first[1])


@dg.sensor(
    asset_selection=[page_chunks, chunk_embeddings],
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Launch page runs (chunks + embeddings) for pages whose text or embedding model changed, "
    "one at a time per tenant, tenants with the oldest pending pages first; on a deep queue, small "
    "sites share runs.",
)
def pending_pages_sensor(
    context: dg.SensorEvaluationContext, database: DatabaseResource, embedder: EmbeddingResource
) -> dg.SensorResult:
    model = embedder.model_name
    with database.connect() as conn:
        if not has_pending_pages(conn, model):
            return dg.SensorResult(skip_reason="no page has new text or a stale embedding model")
        active = active_page_runs(context.instance, datetime.now(timezone.utc))
        pending = pending_pages(
            conn, model, pages_per_tenant=MAX_PAGES_PER_RUN, max_tenants=MAX_TENANTS_PER_TICK,
            exclude_tenants=active.tenants_held_back, exclude_ranges=active.ranges,
        )
        crawling = tenants_still_crawling(conn, {page.tenant_id for page in pending})
    ranges = plan_page_ranges(pending, active, crawling, model)
    if not ranges:
        return dg.SensorResult(
            skip_reason=f"no page run to launch: every pending page is in a queued or running run,"
            f" or its tenant has {MAX_ACTIVE_PAGE_RUNS} page runs queued or running, a shared one, or one"
            f" just failed ({len(active.tenants_held_back)} tenants held), or its next run fills while its crawl goes on"
        )
    generation = int(context.cursor or 0) + 1
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=page_range.run_key(generation),
                tags={
                    **page_run_tags(page_range.tenant_ids, page_range.first, page_range.last, page_range.shared),
                    MAX_RUNTIME_TAG: str(PAGE_RUN_MAX_RUNTIME_SECONDS),
                },
            )
            for page_range in ranges
        ],
        cursor=str(generation),
    )
