"""100k `pages` partitions over 500 tenants: what the scheduling costs as partitions grow.

Pages are written to the pipeline's database and registered as partitions the way the crawl does
(`register_page_partitions`), in a real Dagster instance on PostgreSQL (project dagster.yaml); the
embedder is the fake-fast OpenAI-compatible server of the tests. At 1k partitions (the baseline)
and at 100k it measures:

- the pages sensor's tick: with work (every new page pending) and idle (nothing pending);
- run-launch overhead: a page run created through the webserver's GraphQL `launchRun` (what the
  daemon does for a sensor's request: create the run for its range and queue it);
- a page run's bookkeeping: `materialize` of the page assets over a one-page range (partition range
  resolved, events and values stored; embedding is the fake's, about nothing);
- the UI's asset page for `chunk_embeddings` (a `pages` asset): its GraphQL query, timed.

Goals: tick ≤ 0.2 s idle and ≤ 2 s with work; per-run overhead at 100k ≤ 1.5x the same at 1k.

    python -m pilito_pipeline_tests.bench.bench_partitions [--tenants 500] [--pages 200]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("LC_ALL", "C.UTF-8")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import dagster as dg  # noqa: E402

from pilito_pipeline.defs import checks  # noqa: E402
from pilito_pipeline.defs.page_assets import chunk_embeddings, page_chunks  # noqa: E402
from pilito_pipeline.defs.partitions import page_run_tags, register_page_partitions, run_partition_seqs  # noqa: E402
from pilito_pipeline.defs.resources_from_env import resources_from_settings  # noqa: E402
from pilito_pipeline.defs.sensors import pending_pages_sensor  # noqa: E402
from pilito_pipeline.app.dagster_process import DagsterProcess, ensure_dagster_database, prepare_dagster_home  # noqa: E402
from pilito_pipeline.settings import PROJECT_ROOT, settings_from_env  # noqa: E402
from pilito_pipeline.store.db import connect  # noqa: E402
from pilito_pipeline.store.pages import has_pending_pages  # noqa: E402
from pilito_pipeline.store.migrate import migrate  # noqa: E402
from pilito_pipeline.store.server import embedded_server_uri, stop_embedded_server  # noqa: E402
from pilito_pipeline.text import extract_document  # noqa: E402
from pilito_pipeline_tests.dagster_stack import graphql  # noqa: E402
from pilito_pipeline_tests.services import free_port  # noqa: E402
from pilito_pipeline_tests.embed.openai_server import running_server  # noqa: E402

PAGE_ASSETS = [page_chunks, chunk_embeddings]
CHECKS = dg.load_asset_checks_from_modules([checks])
HTML = (
    "<html><head><title>Courses</title></head><body><main><h1>Courses</h1><h2>Fees</h2>"
    "<p>Our English course meets twice a week in small groups; the fee is paid per term and "
    "scholarships cover part of it for students who need help.</p></main></body></html>"
)
ASSET_PAGE_QUERY = """
query AssetPage($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      id
      partitionKeysByDimension { name partitionKeys }
      partitionStats { numMaterialized numMaterializing numFailed numPartitions }
      assetPartitionStatuses {
        ... on DefaultPartitionStatuses { materializedPartitions failedPartitions unmaterializedPartitions materializingPartitions }
      }
    }
  }
}
"""
LAUNCH_RUN = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""


def timed(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, Any]:
    """Median seconds of `repeat` calls, and the last result."""
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def add_tenants(database_url: str, instance: dg.DagsterInstance, first: int, count: int, pages: int) -> None:
    document = json.dumps(extract_document(HTML, "https://example.com/").to_dict())
    with connect(database_url) as conn:
        for n in range(first, first + count):
            tenant = f"t{n:04d}"
            website_id = conn.execute(
                "INSERT INTO websites (tenant_id, url, status, last_crawled_at) VALUES (%s, %s, 'ready', now())"
                " RETURNING id", (tenant, f"https://{tenant}.example/"),
            ).fetchone()["id"]
            keys = [r["partition_key"] for r in conn.execute(
                "INSERT INTO pages (tenant_id, website_id, url, status, document, content_hash, fetched_at)"
                " SELECT %s, %s, 'https://' || %s || '.example/' || i, 'fetched', %s::jsonb, md5(%s || i), now()"
                " FROM generate_series(1, %s) i ORDER BY i RETURNING partition_key",
                (tenant, website_id, tenant, document, tenant, pages),
            ).fetchall()]
            register_page_partitions(instance, conn, keys)
            conn.commit()


def mark_all_processed(database_url: str, model: str) -> None:
    with connect(database_url) as conn:
        conn.execute("UPDATE pages SET processed_hash = content_hash, processed_model = %s", (model,))
        conn.execute("ANALYZE pages")
        conn.commit()




def launch_page_run(webserver: str, tags: dict[str, str]) -> str:
    """Launch the page assets with `tags` as the UI's Materialize button does; the run's id."""
    params = {
        "selector": {"repositoryLocationName": "pilito_pipeline.definitions", "repositoryName": "__repository__",
                     "jobName": "__ASSET_JOB",
                     "assetSelection": [{"path": [a.key.path[0]]} for a in PAGE_ASSETS]},
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
        "mode": "default",
    }
    outcome = graphql(webserver, LAUNCH_RUN, {"params": params})["launchRun"]
    if outcome["__typename"] != "LaunchRunSuccess":
        raise RuntimeError(outcome)
    return outcome["run"]["runId"]


def measure(label: str, database_url: str, instance: dg.DagsterInstance, resources: dict[str, Any],
            webserver: str, model: str) -> dict[str, float]:
    sensor_resources = {"database": resources["database"], "embedder": resources["embedder"]}

    def tick() -> dg.SensorResult:
        return pending_pages_sensor(dg.build_sensor_context(instance=instance, resources=sensor_resources))

    with connect(database_url) as conn:
        conn.execute("ANALYZE pages")
        conn.commit()
        partitions = conn.execute("SELECT count(*) AS n FROM pages WHERE partition_registered").fetchone()["n"]
    tick_work, result = timed(tick)
    request = result.run_requests[0]
    tags = request.tags
    first = (tags["dagster/asset_partition_range_start"], run_partition_seqs(tags)[0])
    one_page = page_run_tags([tags["pilito/tenant"]], first, first)

    launch_s, run_id = timed(lambda: launch_page_run(webserver, one_page))
    instance.delete_run(run_id)  # queued only (no daemon here): not left to run

    def page_run() -> bool:
        return dg.materialize([*PAGE_ASSETS, *CHECKS], instance=instance, resources=resources, tags=one_page).success

    run_s, ok = timed(page_run)
    assert ok
    ui_s, data = timed(lambda: graphql(webserver, ASSET_PAGE_QUERY, {"key": {"path": ["chunk_embeddings"]}}), repeat=2)
    stats = data["assetNodeOrError"]["partitionStats"]
    mark_all_processed(database_url, model)
    tick_idle, idle = timed(tick, repeat=5)
    assert not idle.run_requests
    with connect(database_url) as conn:  # the tick's own database work, without connecting
        probe_idle, _ = timed(lambda: has_pending_pages(conn, model), repeat=5)
    figures = {"partitions": partitions, "tick_work": tick_work, "tick_idle": tick_idle, "probe_idle": probe_idle,
               "launch": launch_s,
               "page_run": run_s, "ui": ui_s, "requests": len(result.run_requests)}
    print(f"[{label}] {partitions} partitions: tick with work {tick_work:.3f} s ({len(result.run_requests)} run "
          f"requests), idle {tick_idle:.3f} s (pending probe {probe_idle * 1000:.1f} ms); launchRun {launch_s:.3f} s; one-page run {run_s:.2f} s; "
          f"UI asset page {ui_s:.2f} s ({stats['numPartitions']} partitions)", flush=True)
    return figures


def start_webserver(log_path: Path) -> DagsterProcess:
    """The Dagster webserver alone (no daemon: nothing launched runs), answering on a free port."""
    port = free_port()
    log = open(log_path, "ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "dagster_webserver", "-w", str(PROJECT_ROOT / "workspace.yaml"),
         "-h", "127.0.0.1", "-p", str(port)],
        cwd=PROJECT_ROOT, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True,
    )
    webserver = DagsterProcess(process, f"http://127.0.0.1:{port}", log_path)
    webserver.wait_until_ready(timeout=600)
    return webserver


def print_comparison(small: dict[str, float], big: dict[str, float]) -> None:
    """Each figure at the baseline and the full size, their ratio and the goal."""
    def verdict(ok: bool) -> str:
        return "MET" if ok else "MISSED"

    print(f"\n{'':28}{small['partitions']:>10}{big['partitions']:>10}   ratio   goal")
    print(f"{'sensor tick, idle (s)':28}{small['tick_idle']:10.3f}{big['tick_idle']:10.3f}"
          f"{big['tick_idle'] / small['tick_idle']:7.2f}x   ≤ 0.2 s: {verdict(big['tick_idle'] <= 0.2)}")
    print(f"{'  of which pending probe (s)':28}{small['probe_idle']:10.4f}{big['probe_idle']:10.4f}"
          f"{big['probe_idle'] / small['probe_idle']:7.2f}x   (the rest: connecting, Dagster's resource set-up)")
    print(f"{'sensor tick, with work (s)':28}{small['tick_work']:10.3f}{big['tick_work']:10.3f}"
          f"{big['tick_work'] / small['tick_work']:7.2f}x   ≤ 2 s: {verdict(big['tick_work'] <= 2)}")
    for key, name in (("launch", "run launch (GraphQL, s)"), ("page_run", "one-page run (s)")):
        ratio = big[key] / small[key]
        print(f"{name:28}{small[key]:10.3f}{big[key]:10.3f}{ratio:7.2f}x   ≤ 1.5x: {verdict(ratio <= 1.5)}")
    print(f"{'UI asset page (GraphQL, s)':28}{small['ui']:10.3f}{big['ui']:10.3f}{big['ui'] / small['ui']:7.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tenants", type=int, default=500)
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--baseline-tenants", type=int, default=5)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="pilito-bench-partitions-"))
    webserver: DagsterProcess | None = None
    instance = None
    try:
        with running_server() as embeddings:
            database_url = embedded_server_uri(tmp / "pg")
            os.environ.update({
                "DATABASE_URL": database_url, "PILITO_DATA_DIR": str(tmp),
                "EMBEDDING_PROVIDER": "openai", "EMBEDDING_MODEL": "text-embedding-3-small",
                "EMBEDDING_DIMENSION": "384", "OPENAI_API_KEY": "sk-bench", "OPENAI_BASE_URL": embeddings.url,
            })
            settings = settings_from_env()
            migrate(database_url, embedding_dimension=384)
            home = prepare_dagster_home(settings)
            os.environ.update({"DAGSTER_HOME": str(home), "DAGSTER_POSTGRES_URL": ensure_dagster_database(database_url)})
            instance = dg.DagsterInstance.from_config(str(home))
            resources = resources_from_settings(settings)
            model = resources["embedder"].model_name
            webserver = start_webserver(tmp / "webserver.log")

            started = time.perf_counter()
            add_tenants(database_url, instance, 0, args.baseline_tenants, args.pages)
            small = measure("baseline", database_url, instance, resources, webserver.url, model)
            add_tenants(database_url, instance, args.baseline_tenants, args.tenants - args.baseline_tenants, args.pages)
            print(f"registered {args.tenants * args.pages} partitions in {time.perf_counter() - started:.0f} s",
                  flush=True)
            big = measure("full", database_url, instance, resources, webserver.url, model)
    finally:
        if webserver is not None:
            webserver.stop()
        if instance is not None:
            instance.dispose()
        stop_embedded_server(tmp / "pg")
        shutil.rmtree(tmp, ignore_errors=True)

    print_comparison(small, big)

if __name__ == "__main__":
    main()
