"""Scale-out on an existing engine, locally: Dagster's CeleryRunLauncher (deploy/celery) on a real
Redis, and two Celery run workers (processes) taking runs from the one queue, while the real daemon
and run queue (dagster.yaml's limits) decide what runs when. Both workers run work, and each page is
chunked and embedded once."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pytest
import yaml

from pilito_pipeline.app.dagster_process import DAGSTER_PROCESS_ENV
from pilito_pipeline.defs.partitions import RUN_KIND_TAG
from pilito_pipeline.settings import PROJECT_ROOT
from pilito_pipeline.store.db import connect
from pilito_pipeline_tests.dagster_stack import QuietHandler, Stack, dagster_stack, generate_site
from pilito_pipeline_tests.waiting import DEADLINE, wait_for
from pilito_pipeline_tests.defs.test_page_runs_daemon import assert_disjoint_and_complete
from pilito_pipeline_tests.services import throwaway_redis

pytestmark = pytest.mark.slow

SITES = ("north", "south", "east")
WORKERS = 2
PAGES = 8
CELERY_CONFIG = PROJECT_ROOT / "deploy" / "celery"


@contextmanager
def gated_sites(root: Path) -> Iterator[dict[str, str]]:
    """The sites served on 127.0.0.1, each holding its answers until two sites have been asked for
    something: two crawls overlap (dagster.yaml runs two at once), so with each worker running one
    run at a time they cannot run on one worker (no clock involved: one worker would wait for good)."""
    asked: set[str] = set()
    everyone = threading.Event()

    class Gated(QuietHandler):
        site = ""

        def do_GET(self) -> None:
            asked.add(self.site)
            if len(asked) >= WORKERS:
                everyone.set()
            everyone.wait(DEADLINE)
            super().do_GET()

    servers, urls = [], {}
    for site in SITES:
        generate_site(root / site, PAGES, name=site)
        handler = type(f"Gated_{site}", (Gated,), {"site": site})
        server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root / site)))
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        servers.append(server)
        urls[site] = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        yield urls
    finally:
        everyone.set()
        for server in servers:
            server.shutdown()
            server.server_close()


def start_worker(name: str, home: Path, dagster_url: str, log: Path) -> subprocess.Popen:
    """A Celery run worker as deploy/celery/run_launcher.yaml describes it: one run at a time, in its
    own long-lived process."""
    env = {
        **os.environ, **DAGSTER_PROCESS_ENV, "DAGSTER_HOME": str(home), "DAGSTER_POSTGRES_URL": dagster_url,
        "PYTHONPATH": os.pathsep.join(filter(None, (str(CELERY_CONFIG), os.environ.get("PYTHONPATH")))),
    }
    command = [sys.executable, "-m", "celery", "-A", "dagster_celery.app", "worker", "-Q", "dagster",
               "--pool", "solo", "-n", f"{name}@%h", "--loglevel", "INFO"]
    with open(log, "ab") as out:
        return subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)


def stop_worker(worker: subprocess.Popen) -> None:
    worker.send_signal(signal.SIGTERM)  # Celery's warm shutdown
    try:
        worker.wait(60)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


@contextmanager
def celery_stack(data_dir: Path, env: dict[str, str]) -> Iterator[tuple[Stack, list[subprocess.Popen]]]:
    """The tests' Dagster stack with the Celery run launcher in the instance's dagster.yaml, and two
    run workers on the same Redis queue."""
    launcher = yaml.safe_load((CELERY_CONFIG / "run_launcher.yaml").read_text(encoding="utf-8"))
    with dagster_stack(data_dir, env, instance_config=launcher) as stack:
        workers = [start_worker(name, stack.dagster_home, stack.env["DAGSTER_POSTGRES_URL"], data_dir / f"{name}.log")
                   for name in ("w1", "w2")]
        try:
            yield stack, workers
        finally:
            for worker in workers:
                stop_worker(worker)


def worker_pid(stack: Stack, run_id: str) -> int:
    """The process that ran the run: Dagster's engine event as a run starts names it."""
    for entry in stack.instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        pid = entry.dagster_event.engine_event_data.metadata.get("pid")
        if pid is not None:
            return int(pid.value)
    raise AssertionError(f"run {run_id} has no worker pid")


def all_done(stack: Stack) -> bool:
    with connect(stack.database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE status <> 'ready') AS crawling,"
            " (SELECT count(*) FROM pages WHERE content_hash IS NOT NULL) AS with_text,"
            " (SELECT count(*) FROM pages WHERE processed_hash = content_hash) AS processed FROM websites"
        ).fetchone()
    ended = all(run.end_time is not None for run in stack.runs())
    return ended and row["crawling"] == 0 and row["with_text"] == row["processed"] >= len(SITES) * PAGES


def test_two_celery_run_workers_share_one_queue_and_each_page_is_done_once(tmp_path: Path) -> None:
    with throwaway_redis(tmp_path) as redis_url, gated_sites(tmp_path / "sites") as urls:
        env = {"CRAWL_ALLOWED_HOSTS": "127.0.0.1", "CRAWL_RATE_LIMIT_SECONDS": "0.05", "REDIS_URL": redis_url}
        with celery_stack(tmp_path / "stack", env) as (stack, workers):
            for site, url in urls.items():
                stack.register(site, url, max_pages=PAGES + 1)
            wait_for("every site crawled and every page processed", lambda: all_done(stack), interval=2,
                     diagnostics=lambda: stack.log_tail() + "".join(
                         (tmp_path / "stack" / f"{w}.log").read_text(errors="replace")[-3000:] for w in ("w1", "w2")))

            runs = stack.runs()
            assert all(run.dagster_run.status == dg.DagsterRunStatus.SUCCESS for run in runs)
            # Every run was a Celery task on one of the two workers, and both ran some.
            ran_on = Counter(worker_pid(stack, run.dagster_run.run_id) for run in runs)
            assert set(ran_on) == {worker.pid for worker in workers}, ran_on
            # Each page in exactly one page run, and materialized once.
            page_runs = [run for run in runs if run.dagster_run.tags.get(RUN_KIND_TAG) == "pages"]
            order = stack.partition_order()
            assert_disjoint_and_complete(stack, page_runs, order)
            materialized = Counter(
                record.partition_key for record in stack.instance.fetch_materializations(
                    dg.AssetKey("chunk_embeddings"), limit=10_000).records
            )
            assert materialized == Counter(order)
