"""Dynamic partitions: one per registered website, one per crawled page (keys `w<id>` / `p<id>`),
and the run tags the queue's limits read (dagster.yaml).

Keys derive from database ids, never raw URLs, so they are short, stable and free of commas and
`...`. Pages registered together get contiguous keys, which lets one run cover a range of them;
`register_page_partitions` records that order in the pages table, so the pages sensor never reads
the partition list.
"""

from collections.abc import Sequence

import dagster as dg
import psycopg

from pilito_pipeline.store import pages as page_store

websites_partitions = dg.DynamicPartitionsDefinition(name="websites")
pages_partitions = dg.DynamicPartitionsDefinition(name="pages")

TENANT_TAG = "pilito/tenant"
"""Every crawl and page run carries its tenant; a page run shared by several tenants carries them
all, comma-separated (tenant ids have no commas: store/tenants.py), see `run_tenants`."""
RUN_KIND_TAG = "pilito/run_kind"
"""`crawl`, `pages` or `maintenance` (entry embeddings, ANN index builds, the audit): dagster.yaml
caps each kind so that the others always have a slot."""
MAINTENANCE_TAG = "pilito/maintenance"
"""Which maintenance a `maintenance` run does (`entries`, `ann_indexes`, `audit`)."""


def maintenance_run_tags(what: str) -> dict[str, str]:
    return {RUN_KIND_TAG: "maintenance", MAINTENANCE_TAG: what}


def refuse_unless_maintenance_run(tags: dict[str, str], job_name: str) -> None:
    """Maintenance work runs only under its queue limit (`pilito/run_kind: maintenance`, one at a
    time), so it never takes the slot each crawl and page run keeps: a run without the tag (the
    asset materialized from the catalog) is refused with where to launch it instead."""
    if tags.get(RUN_KIND_TAG) != "maintenance":
        raise dg.Failure(
            description=f"refused: maintenance runs need the tag {RUN_KIND_TAG}=maintenance, so they queue one at"
            f" a time and leave crawls and page runs their slots. Launch the job `{job_name}` (Jobs in the UI)"
            f" instead; its sensor launches it by itself when needed.",
            allow_retries=False,
        )
TENANT_CRAWL_TAG = "pilito/tenant_crawl"
TENANT_PAGES_TAG = "pilito/tenant_pages"
"""Per-tenant limits (applyLimitPerUniqueValue) apply to crawls and page runs separately, so a
site's pages are chunked and embedded while it is still being crawled."""

PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"
"""How a run request targets a partition range: Dagster 1.13 has no public RunRequest argument for
it, only these tags (their names are checked against Dagster's in the tests)."""
PARTITION_SEQS_TAG = "pilito/partition_seqs"
"""`first-last` registration order (`pages.partition_seq`) of a page run's range: the pages sensor
leaves pages inside a queued or running range alone."""
SHARED_RUN_TAG = "pilito/shared_run"
"""A page run the pages sensor made on a deep queue for the tenants with no page run (any number of
them): they get no other page run while it is queued or running."""
MAX_RETRIES_TAG = "dagster/max_retries"
"""Documented run tag overriding dagster.yaml's run_retries for one run."""
BACKFILL_TAG = "dagster/backfill"
"""Dagster's tag on every run of a backfill (its id): the page assets hand such runs' pages over to
tenant-tagged page runs (page_assets.hand_over_backfill)."""
PRIORITY_TAG = "dagster/priority"
"""Documented run tag: the run queue starts queued runs of a higher priority first (default 0)."""
PAGE_RUN_PRIORITY = 1
"""Page runs before crawls: a crawled site's pages become searchable before more sites are crawled
(dagster.yaml keeps a slot for each kind, so crawls still go on)."""

MAX_PAGES_PER_RUN = 200
"""Pages in one page run: the sensor's ranges and UI backfills' runs alike."""
FIRST_REGISTRATION_BATCH = 5
"""A crawl registers its first pages this soon, so a new site's first answers come in seconds."""
REGISTRATION_BATCH = 50
"""Later pages are registered together in batches of this size (contiguous keys)."""


def crawl_run_tags(tenant_id: str) -> dict[str, str]:
    """A crawl run. Dagster never re-executes it: a crawl run that died has its crawl requested
    again by `dead_run_sensor` (a new run key), and a Dagster run retry as well would crawl twice."""
    return {TENANT_TAG: tenant_id, RUN_KIND_TAG: "crawl", TENANT_CRAWL_TAG: tenant_id, MAX_RETRIES_TAG: "0"}


def page_run_tags(
    tenant_ids: Sequence[str], first: tuple[str, int], last: tuple[str, int], shared: bool = False
) -> dict[str, str]:
    """A page run over the pages (key, registration order) `first`..`last` of these tenants; the
    pages sensor retries failed page work itself.

    A shared run (sensors.shared_ranges: any tenants, `SHARED_RUN_TAG`) is limited by the queue per
    unique value of `pilito/tenant_pages` like a tenant of its own; that each of its tenants has no
    other page run meanwhile is the pages sensor's rule."""
    tenants = ",".join(tenant_ids)
    return {
        **({SHARED_RUN_TAG: "true"} if shared else {}),
        TENANT_TAG: tenants,
        RUN_KIND_TAG: "pages",
        TENANT_PAGES_TAG: tenants,
        PARTITION_RANGE_START_TAG: first[0],
        PARTITION_RANGE_END_TAG: last[0],
        PARTITION_SEQS_TAG: f"{first[1]}-{last[1]}",
        MAX_RETRIES_TAG: "0",
        PRIORITY_TAG: str(PAGE_RUN_PRIORITY),
    }


def is_tenant_page_run(tags: dict[str, str]) -> bool:
    """A page run under the per-tenant rules (the pages sensor's tags): any other run of the page
    assets (a UI materialization or backfill) hands its pages over to such runs."""
    return tags.get(RUN_KIND_TAG) == "pages" and TENANT_PAGES_TAG in tags


def run_tenants(tags: dict[str, str]) -> list[str]:
    """Every tenant a run names (a shared page run names several); none for a run without the tag."""
    return [tenant for tenant in tags.get(TENANT_TAG, "").split(",") if tenant]


def run_partition_seqs(tags: dict[str, str]) -> tuple[int, int] | None:
    """The registration-order range a page run's tags name (None for runs without one)."""
    value = tags.get(PARTITION_SEQS_TAG, "")
    first, _, last = value.partition("-")
    return (int(first), int(last)) if first.isdigit() and last.isdigit() else None


def registration_batch_size(registered_so_far: int) -> int:
    return FIRST_REGISTRATION_BATCH if registered_so_far == 0 else REGISTRATION_BATCH


RUN_NOT_ENDED = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def drop_page_partitions(instance: dg.DagsterInstance, keys: list[str]) -> list[str]:
    """Delete the `pages` partitions of `keys` (removed pages), except those that a run not yet
    ended names as the first or last key of its range: Dagster resolves a range run's keys from
    those two partitions when the run starts and in each step, so deleting one fails the run (a
    crawl retiring pages that a queued page run covers). Returns the keys kept, to drop later; the
    run finds no document for them and skips them."""
    ends = {
        run.tags.get(tag)
        for run in instance.get_runs(filters=dg.RunsFilter(statuses=RUN_NOT_ENDED))
        for tag in (PARTITION_RANGE_START_TAG, PARTITION_RANGE_END_TAG)
    }
    kept = []
    for key in keys:
        if key in ends:
            kept.append(key)
        elif instance.has_dynamic_partition(pages_partitions.name, key):
            instance.delete_dynamic_partition(pages_partitions.name, key)
    return kept


def register_page_partitions(instance: dg.DagsterInstance, conn: psycopg.Connection, keys: list[str]) -> None:
    """Add `pages` partitions and record their registration order; the caller commits.

    The lock makes Dagster's order of the keys and `partition_seq` agree across concurrent crawls.
    """
    page_store.lock_partition_registration(conn)
    # A key left in Dagster by a registration whose transaction did not commit keeps its old place
    # unless it is removed first: re-add it, so it goes to the end like the rest of the batch.
    for key in instance.get_existing_dynamic_partitions(pages_partitions.name, keys):
        instance.delete_dynamic_partition(pages_partitions.name, key)
    instance.add_dynamic_partitions(pages_partitions.name, keys)
    page_store.mark_partitions_registered(conn, keys)
