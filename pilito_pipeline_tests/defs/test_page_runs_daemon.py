"""Through the real daemon and run queue: a slow crawl registers its pages in many batches while the
pages sensor launches page runs; no page is ever in two runs, and pages are embedded while the
site is still being crawled."""

from __future__ import annotations

import itertools
from pathlib import Path

import psycopg
import pytest

from pilito_pipeline.defs.partitions import RUN_KIND_TAG, TENANT_TAG
from pilito_pipeline.launcher import DAGSTER_DATABASE
from pilito_pipeline.store.db import connect
from pilito_pipeline.store.server import APP_DATABASE
from pilito_pipeline_tests.defs.daemon_stack import daemon_stack, generate_site, served, wait_for

pytestmark = pytest.mark.slow

PAGES = 200


def test_a_slow_crawl_gives_each_page_one_run_and_runs_pages_while_crawling(tmp_path: Path) -> None:
    generate_site(tmp_path / "site", PAGES)
    env = {"CRAWL_ALLOWED_HOSTS": "127.0.0.1", "CRAWL_RATE_LIMIT_SECONDS": "0.3"}
    with served(tmp_path / "site") as url, daemon_stack(tmp_path / "stack", env) as stack:
        website_id = stack.register("slow", url, max_pages=PAGES + 1)

        def all_processed() -> bool:
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

        try:
            wait_for("every page of the slow site processed and every run ended", all_processed, interval=2)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{stack.log_tail()}") from exc

        order = stack.partition_order()
        runs = stack.page_runs("slow")
        assert len(runs) > 1  # the site was worked through in several runs
        covered = [set(stack.run_keys(run, order)) for run in runs]
        for (i, a), (j, b) in itertools.combinations(enumerate(covered), 2):
            assert not a & b, f"runs {runs[i].dagster_run.run_id} and {runs[j].dagster_run.run_id} share {sorted(a & b)[:5]}"
        assert set().union(*covered) >= set(order)  # and every page had its run
        assert all(run.dagster_run.tags[TENANT_TAG] == "slow" for run in runs)

        # Dagster's own database does not wait for the disk on each event commit (launcher.py).
        dagster_url = stack.database_url.replace(f"/{APP_DATABASE}?", f"/{DAGSTER_DATABASE}?")
        with psycopg.connect(dagster_url) as conn:  # no pgvector there: a plain connection
            assert conn.execute("SHOW synchronous_commit").fetchone() == ("off",)

        (crawl,) = [r for r in stack.runs() if r.dagster_run.tags.get(RUN_KIND_TAG) == "crawl"]
        # Page runs are not held back by the crawl: the first starts while the site is still being crawled.
        assert min(run.start_time for run in runs) < crawl.end_time
