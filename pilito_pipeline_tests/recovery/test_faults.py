"""Faults injected into a running pipeline (real `dagster dev`, daemon, run queue and storage); each
test ends with the tenant's pages all processed, exact chunk counts, nothing lost and nothing stale,
with no manual step. Recovery time: fault injected → tenant fully processed.

Run with `-s` to see the table of faults and recovery times at the end.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator

import dagster as dg
import pytest

from pilito_pipeline.defs.partitions import TENANT_TAG
from pilito_pipeline.defs.recovery import RECOVERED_TAG, WORKER_GONE, run_worker
from pilito_pipeline.store.db import connect
from pilito_pipeline.store.websites import register_website
from pilito_pipeline_tests.embed.openai_server import Failure
from pilito_pipeline_tests.dagster_stack import Site, Stack
from pilito_pipeline_tests.waiting import wait_for

pytestmark = pytest.mark.slow

RESULTS: list[tuple[str, str, float, int, int]] = []


@pytest.fixture(scope="module", autouse=True)
def recovery_table() -> Iterator[None]:
    yield
    print("\n| fault | what happened | recovery time | rows lost | stale rows |\n|---|---|---|---|---|")
    for fault, what, seconds, lost, stale in RESULTS:
        print(f"| {fault} | {what} | {seconds:.0f} s | {lost} | {stale} |")


def register(stack: Stack, tenant: str, site: Site) -> None:
    with connect(stack.database_url) as conn:
        register_website(conn, tenant, site.url, max_pages=50)
        conn.commit()


def finish(
    stack: Stack, tenant: str, site: Site, fault: str, what: str | Callable[[], str], injected_at: float
) -> None:
    expected = site.expected_rows(tenant)
    done_at = stack.wait_processed(tenant, expected, fault)
    lost, stale = stack.knowledge_gap(tenant, expected)
    assert (lost, stale) == (0, 0)
    assert sum(expected.values()) > len(expected)  # several chunks per page: the counts mean something
    RESULTS.append((fault, what() if callable(what) else what, done_at - injected_at, lost, stale))
    print(f"\nRECOVERY {RESULTS[-1]}", flush=True)


def kill_worker(stack: Stack, run: dg.DagsterRun) -> int:
    worker = run_worker(stack.instance, run.run_id)
    assert worker is not None
    os.kill(worker[0], signal.SIGKILL)
    return worker[0]


def status(stack: Stack, run_id: str) -> str:
    """The run's status and, once it ended unfinished, who ended it (its failure message)."""
    run = stack.instance.get_run_by_id(run_id)
    if run.status not in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
        return run.status.value
    if run.tags.get(RECOVERED_TAG) == WORKER_GONE:
        return f"{run.status.value} by dead_run_sensor"
    records = stack.instance.get_records_for_run(
        run_id, of_type={dg.DagsterEventType.RUN_FAILURE, dg.DagsterEventType.RUN_CANCELED}
    ).records
    message = records[-1].event_log_entry.dagster_event.message if records else ""
    return f"{run.status.value} by Dagster: {message[:80]!r}"


def failed_runs(stack: Stack, tenant: str) -> int:
    return len(stack.instance.get_runs(
        filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE], tags={TENANT_TAG: tenant})
    ))


def test_run_worker_killed_mid_crawl(stack: Stack, make_site) -> None:
    """A first crawl killed mid-way leaves the website `crawling` with its request's run key used:
    without recovery it is never crawled again."""
    site = make_site("alpha", held_path="/p2.html")
    site.path_released.clear()
    register(stack, "alpha", site)
    wait_for("the crawl to reach /p2.html", lambda: "/p2.html" in site.requested)
    run = stack.running_run("alpha", "crawl")
    kill_worker(stack, run)
    injected_at = time.monotonic()
    site.path_released.set()
    finish(stack, "alpha", site, "run worker SIGKILLed mid-crawl",
           lambda: f"crawl run {status(stack, run.run_id)}", injected_at)
    assert stack.instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE


def test_run_worker_killed_mid_embedding(stack: Stack, make_site) -> None:
    site = make_site("bravo")
    stack.embeddings.admitted.clear()
    asked = len(stack.embeddings.authorizations)
    register(stack, "bravo", site)
    wait_for("an embedding request", lambda: len(stack.embeddings.authorizations) > asked)
    run = stack.running_run("bravo", "pages")
    kill_worker(stack, run)
    injected_at = time.monotonic()
    stack.embeddings.admitted.set()
    finish(stack, "bravo", site, "run worker SIGKILLed mid-embedding",
           lambda: f"page run {status(stack, run.run_id)}; its pages launched again", injected_at)
    assert stack.instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE


def test_embedding_provider_failing_for_a_while(stack: Stack, make_site) -> None:
    site = make_site("charlie")
    server = stack.embeddings
    asked = len(server.authorizations)
    server.fail_next(Failure(504, delay_seconds=40))  # longer than the client's 30 s timeout
    server.always_fail = Failure(500)
    register(stack, "charlie", site)
    wait_for("an embedding request", lambda: len(server.authorizations) > asked)
    injected_at = time.monotonic()
    wait_for("4 failed embedding requests", lambda: len(server.authorizations) >= asked + 4)
    server.always_fail = None
    failures = len(server.authorizations) - asked
    finish(stack, "charlie", site, "embedding provider: 1 timeout then 500s",
           f"{failures} failed requests; client, step and breaker retries carried the run through", injected_at)


def test_redis_down_then_back(stack: Stack, make_site) -> None:
    site = make_site("delta")
    stack.embeddings.admitted.clear()
    asked = len(stack.embeddings.authorizations)
    stack.kill_redis()
    injected_at = time.monotonic()
    register(stack, "delta", site)
    wait_for("an embedding request with Redis down", lambda: len(stack.embeddings.authorizations) > asked)
    stack.start_redis()
    stack.embeddings.admitted.set()
    finish(stack, "delta", site, "Redis down (crawl, embedding start), then back",
           lambda: f"breaker and flags fell back to in-process state; {failed_runs(stack, 'delta')} runs failed",
           injected_at)


def test_postgres_stopped_and_started_mid_run(stack: Stack, make_site) -> None:
    site = make_site("echo")
    server = stack.embeddings
    server.admitted.clear()
    asked, answered = len(server.authorizations), len(server.requests)
    register(stack, "echo", site)
    wait_for("an embedding request", lambda: len(server.authorizations) > asked)
    run = stack.running_run("echo", "pages")
    stack.stop_postgres()
    injected_at = time.monotonic()
    server.admitted.set()  # the run gets its embeddings while the database is down
    wait_for("embeddings answered", lambda: len(server.requests) > answered)
    stack.start_postgres()
    finish(stack, "echo", site, "embedded PostgreSQL stopped mid-embedding, started again",
           lambda: f"the page run reconnected and wrote every row (run {status(stack, run.run_id)} then); "
                   f"{failed_runs(stack, 'echo')} runs failed", injected_at)


def test_dagster_crashed_mid_run_and_started_again(stack: Stack, make_site) -> None:
    """The reproduction: Dagster gone while a page run works leaves the run STARTED, and after a
    restart it held its tenant's slot (limit 1) for good."""
    site = make_site("foxtrot")
    stack.embeddings.admitted.clear()
    asked = len(stack.embeddings.authorizations)
    register(stack, "foxtrot", site)
    wait_for("an embedding request", lambda: len(stack.embeddings.authorizations) > asked)
    run = stack.running_run("foxtrot", "pages")
    stack.crash_dagster()
    injected_at = time.monotonic()
    left = status(stack, run.run_id)
    assert left == "STARTED"
    stack.embeddings.admitted.set()
    stack.start_dagster()
    finish(stack, "foxtrot", site,
           "Dagster (webserver, daemon, code server, run worker) SIGKILLed mid-run, started again",
           lambda: f"page run left {left}, then {status(stack, run.run_id)}", injected_at)
    assert status(stack, run.run_id) == "FAILURE by dead_run_sensor"
