"""Runs whose worker died are failed, and their work requested again, without a human.

Dagster's run monitoring (dagster.yaml) fails runs stuck STARTING, closes runs stuck CANCELING and
fails runs past their `dagster/max_runtime`. With the DefaultRunLauncher (`dagster dev`, the demo,
`up`) it cannot see a run worker that died, by a kill, an out-of-memory or Dagster stopped around it:
such a run stays STARTED forever, holding its tenant's run slot (limit 1). The
worker is a process on this host whose pid Dagster records when it starts, so `dead_run_sensor`
fails the runs whose worker is gone. Then:

- a website whose crawl run ended without closing the crawl (it died, or failed before the crawl
  began) is requested again: a new request time, hence a new run key for `website_crawl_sensor`;
- a page range whose run died is launched again by `pending_pages_sensor`: its pages are still
  pending, the dead run no longer counts as active, and runs tagged `RECOVERED_TAG` change its run key.
"""

import dagster as dg

from pilito_pipeline.defs.crawl_assets import website_crawl
from pilito_pipeline.defs.resources import DatabaseResource
from pilito_pipeline.processes import process_alive
from pilito_pipeline.store import websites as website_store

RECOVERED_TAG = "pilito/recovered"
"""Set on a run failed because its worker died; the value says so."""
WORKER_GONE = "worker_gone"
MAX_RUNTIME_TAG = "dagster/max_runtime"
CRAWL_MAX_RUNTIME_SECONDS = 2 * 3600
"""A crawl of up to 200 pages, each possibly behind a robots `Crawl-delay` of 30 s."""
PAGE_RUN_MAX_RUNTIME_SECONDS = 3600
"""Up to 200 pages embedded, provider retries included."""
PARTITION_TAG = "dagster/partition"
ENDED_UNFINISHED = (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)


def run_worker(instance: dg.DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """The run worker's pid and when it was recorded (Dagster's engine event as the worker starts)."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT, limit=20).records
    for record in records:
        entry = record.event_log_entry
        pid = entry.dagster_event.engine_event_data.metadata.get("pid") if entry.dagster_event else None
        if pid is not None:
            return int(pid.value), entry.timestamp
    return None


def fail_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Fail STARTED runs (and close CANCELING ones) whose worker process is gone; their run ids.

    Only with the DefaultRunLauncher, whose workers run on this host; other launchers' workers are
    checked by Dagster's run monitoring. A run is re-read after its worker is found dead: a worker
    that finished meanwhile has recorded the run's end, and a dead one cannot record anything more.
    """
    if not isinstance(instance.run_launcher, dg.DefaultRunLauncher):
        return []
    failed = []
    statuses = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=statuses)):
        worker = run_worker(instance, run.run_id)
        if worker is None or process_alive(*worker):
            continue
        current = instance.get_run_by_id(run.run_id)
        if current is None or current.status not in statuses:
            continue
        message = f"The run worker (pid {worker[0]}) is gone: it was killed or Dagster stopped around it."
        instance.add_run_tags(run.run_id, {RECOVERED_TAG: WORKER_GONE})
        if current.status == dg.DagsterRunStatus.CANCELING:
            instance.report_run_canceled(current, message)
        else:
            instance.report_run_failed(current, message)
        failed.append(run.run_id)
    return failed


def latest_crawl_run(instance: dg.DagsterInstance, partition_key: str) -> dg.RunRecord | None:
    for record in instance.get_run_records(filters=dg.RunsFilter(tags={PARTITION_TAG: partition_key}), limit=10):
        selection = record.dagster_run.asset_selection
        if selection and website_crawl.key in selection:
            return record
    return None


@dg.sensor(
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Fail runs whose worker died; request again the crawls such runs left unfinished.",
)
def dead_run_sensor(context: dg.SensorEvaluationContext, database: DatabaseResource) -> dg.SkipReason:
    failed = fail_dead_runs(context.instance)
    for run_id in failed:
        context.log.warning(f"run {run_id}: worker gone, marked failed")
    requested = []
    with database.connect() as conn:
        # A crawl run that ended without closing its crawl (killed, or failed before the crawl began)
        # leaves its request open under a run key already used: renew the request.
        for website in website_store.websites_awaiting_crawl(conn):
            record = latest_crawl_run(context.instance, website.partition_key)
            if record is None or record.dagster_run.status not in ENDED_UNFINISHED:
                continue
            run = record.dagster_run
            reason = f"crawl run {run.run_id} ended ({run.status.value}) before closing the crawl"
            if website_store.request_crawl_again(conn, website.id, record.create_timestamp, reason):
                requested.append(website.partition_key)
        conn.commit()
    if requested:
        context.log.warning(f"crawls requested again after their run ended unfinished: {requested}")
    return dg.SkipReason(f"{len(failed)} dead runs failed, {len(requested)} crawls requested again")
