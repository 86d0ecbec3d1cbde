"""Through the real daemon and run queue: a slow crawl registers its pages in many batches while the
pages sensor launches page runs; no page is ever in two runs, and pages are embedded while the
site is still being crawled. Then a backfill of the page assets launched as the UI does becomes
tenant runs."""

from __future__ import annotations

import itertools
from pathlib import Path

import psycopg
import pytest

import dagster as dg

from pilito_pipeline.defs.partitions import BACKFILL_TAG, RUN_KIND_TAG, TENANT_TAG
from pilito_pipeline.app.dagster_process import DAGSTER_DATABASE
from pilito_pipeline.store.db import connect
from pilito_pipeline.store.server import APP_DATABASE
from pilito_pipeline_tests.dagster_stack import Stack, dagster_stack, generate_site, served
from pilito_pipeline_tests.waiting import wait_for

pytestmark = pytest.mark.slow

PAGES = 200


def test_a_slow_crawl_gives_each_page_one_run_and_runs_pages_while_crawling(tmp_path: Path) -> None:
    generate_site(tmp_path / "site", PAGES)
    env = {"CRAWL_ALLOWED_HOSTS": "127.0.0.1", "CRAWL_RATE_LIMIT_SECONDS": "0.3"}
    with served(tmp_path / "site") as url, dagster_stack(tmp_path / "stack", env) as stack:
        website_id = stack.register("slow", url, max_pages=PAGES + 1)

        def all_processed() -> bool:
            return site_processed(stack, website_id)

        wait_for("every page of the slow site processed and every run ended", all_processed, interval=2,
                 diagnostics=stack.log_tail)

        order = stack.partition_order()
        runs = stack.page_runs("slow")
        assert len(runs) > 1  # the site was worked through in several runs
        assert_disjoint_and_complete(stack, runs, order)
        assert all(run.dagster_run.tags[TENANT_TAG] == "slow" for run in runs)

        # Dagster's own database does not wait for the disk on each event commit (app/dagster_process.py).
        dagster_url = stack.database_url.replace(f"/{APP_DATABASE}?", f"/{DAGSTER_DATABASE}?")
        with psycopg.connect(dagster_url) as conn:  # no pgvector there: a plain connection
            assert conn.execute("SHOW synchronous_commit").fetchone() == ("off",)

        (crawl,) = [r for r in stack.runs() if r.dagster_run.tags.get(RUN_KIND_TAG) == "crawl"]
        # Page runs are not held back by the crawl: the first starts while the site is still being crawled.
        assert min(run.start_time for run in runs) < crawl.end_time

        # "Materialize all" of the page assets from the UI: a backfill of every page partition.
        launched = stack.graphql(LAUNCH_BACKFILL, {"params": {
            "partitionNames": order,
            "assetSelection": [{"path": ["page_chunks"]}, {"path": ["chunk_embeddings"]}],
        }})["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched

        def backfill_runs() -> list[dg.RunRecord]:
            return [r for r in stack.runs() if r.dagster_run.tags.get(BACKFILL_TAG) == launched["backfillId"]]

        wait_for("the backfill's runs", lambda: backfill_runs() and all(r.end_time for r in backfill_runs()), interval=2)
        wait_for("every page processed again", all_processed, interval=2)

        def backfill_status() -> str | None:
            status = stack.graphql(BACKFILL_STATUS, {"id": launched["backfillId"]})["partitionBackfillOrError"]["status"]
            return None if status == "REQUESTED" else status

        # Its partitions materialized once the tenants' runs had processed them: the backfill succeeds.
        assert wait_for("the backfill to end", backfill_status, interval=2) in ("COMPLETED", "COMPLETED_SUCCESS")
        for run in backfill_runs():  # ≤ 200 pages of any tenant each: they embedded nothing themselves
            assert run.dagster_run.status == dg.DagsterRunStatus.SUCCESS
            for event in stack.instance.all_logs(run.dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
                materialization = event.asset_materialization
                if materialization.asset_key == dg.AssetKey("chunk_embeddings"):
                    assert "pages_handed_over" in materialization.metadata
                    assert "embeddings_computed" not in materialization.metadata
        again = [r for r in stack.page_runs("slow") if r.create_timestamp > max(r.create_timestamp for r in runs)]
        assert again and all(BACKFILL_TAG not in r.dagster_run.tags for r in again)
        assert_disjoint_and_complete(stack, again, order)  # the tenant's own runs did what it asked


LAUNCH_BACKFILL = """
mutation ($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}
"""


BACKFILL_STATUS = """
query ($id: String!) { partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } } }
"""


def site_processed(stack: Stack, website_id: int) -> bool:
    with connect(stack.database_url) as conn:
        row = conn.execute(
            "SELECT (SELECT status FROM websites WHERE id = %(w)s) AS status,"
            " count(*) FILTER (WHERE content_hash IS NOT NULL) AS with_text,"
            " count(*) FILTER (WHERE processed_hash = content_hash) AS processed"
            " FROM pages WHERE website_id = %(w)s",
            {"w": website_id},
        ).fetchone()
    ended = all(run.end_time is not None for run in stack.runs())
    return ended and row["status"] == "ready" and row["with_text"] == row["processed"] > PAGES // 2


def assert_disjoint_and_complete(stack: Stack, runs: list[dg.RunRecord], order: list[str]) -> None:
    covered = [set(stack.run_keys(run, order)) for run in runs]
    for (i, a), (j, b) in itertools.combinations(enumerate(covered), 2):
        assert not a & b, f"runs {runs[i].dagster_run.run_id} and {runs[j].dagster_run.run_id} share {sorted(a & b)[:5]}"
    assert set().union(*covered) >= set(order)  # and every page had its run
