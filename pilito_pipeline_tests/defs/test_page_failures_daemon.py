"""Through the real daemon and run queue: a site with one page the embedding provider refuses (a real
OpenAI-compatible server on 127.0.0.1). Every page run succeeds and stores the good pages; the bad
page is backed off, then quarantined, and never holds back its tenant: a second site of the same
tenant is processed meanwhile, and a UI backfill over the quarantined page completes. `retry-pages`
releases it once the provider takes it."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from pilito_pipeline import retries
from pilito_pipeline.app.cli import main as cli_main
from pilito_pipeline.defs.partitions import BACKFILL_TAG
from pilito_pipeline.store.db import connect
from pilito_pipeline_tests.dagster_stack import dagster_stack, generate_site, served
from pilito_pipeline_tests.waiting import wait_for
from pilito_pipeline_tests.defs.test_page_runs_daemon import BACKFILL_STATUS, LAUNCH_BACKFILL
from pilito_pipeline_tests.embed.openai_server import running_server

pytestmark = pytest.mark.slow

POISON = "POISON-INPUT"


def test_a_refused_page_is_quarantined_and_its_tenant_keeps_flowing(tmp_path: Path) -> None:
    generate_site(tmp_path / "site", 12)
    poisoned = tmp_path / "site" / "page5.html"
    poisoned.write_text(poisoned.read_text().replace("</main>", f"<p>{POISON} and more words.</p></main>"))
    generate_site(tmp_path / "later", 6, name="later")
    with running_server() as provider, served(tmp_path / "site") as url, served(tmp_path / "later") as later_url:
        provider.refuse_inputs_containing = POISON
        env = {
            "CRAWL_ALLOWED_HOSTS": "127.0.0.1", "CRAWL_RATE_LIMIT_SECONDS": "0",
            "EMBEDDING_PROVIDER": "openai", "EMBEDDING_MODEL": "text-embedding-3-small",
            "EMBEDDING_DIMENSION": "384", "OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": provider.url,
        }
        with dagster_stack(tmp_path / "stack", env) as stack:

            def query(sql: str, *params: object) -> list[dict]:
                with connect(stack.database_url) as conn:
                    return conn.execute(sql, params).fetchall()

            def failure() -> dict | None:
                rows = query("SELECT f.*, p.url FROM page_failures f JOIN pages p USING (partition_key)")
                return rows[0] if rows else None

            def pending_except_failed(website_id: int) -> int:
                return query(
                    "SELECT count(*) AS n FROM pages WHERE website_id = %s AND status = 'fetched'"
                    " AND content_hash IS DISTINCT FROM processed_hash"
                    " AND partition_key NOT IN (SELECT partition_key FROM page_failures)", website_id)[0]["n"]

            def settled(website_id: int) -> bool:
                runs = stack.page_runs("shop")
                return (bool(query("SELECT 1 FROM pages WHERE website_id = %s AND status = 'fetched'", website_id))
                        and pending_except_failed(website_id) == 0 and all(r.end_time for r in runs))

            site = stack.register("shop", url)
            wait_for("the good pages stored and the refused one recorded", lambda: failure() and settled(site),
                     interval=1, diagnostics=stack.log_tail)
            # Each expired backoff (time passes: retry_at moved) gives it another run, until quarantined.
            for attempt in range(2, retries.PAGE_ATTEMPTS + 1):
                query_commit(stack.database_url, "UPDATE page_failures SET retry_at = now()")
                wait_for(f"attempt {attempt}", lambda: failure()["attempts"] == attempt, interval=1,
                         diagnostics=stack.log_tail)
            wait_for("its last run to end", lambda: settled(site), interval=1, diagnostics=stack.log_tail)
            recorded = failure()
            assert recorded["url"].endswith("/page5.html") and recorded["quarantined_at"] is not None
            assert "cannot be embedded" in recorded["reason"]
            statuses = {r.dagster_run.run_id: r.dagster_run.status for r in stack.page_runs("shop")}
            assert set(statuses.values()) == {dg.DagsterRunStatus.SUCCESS}, statuses  # no run failed for it

            # The tenant keeps flowing: its second site is processed while the page stays quarantined.
            second = stack.register("shop", later_url)
            wait_for("the tenant's second site processed", lambda: settled(second), interval=1)
            assert failure()["quarantined_at"] is not None

            # A UI backfill over the quarantined page and a good one completes instead of waiting for it.
            good = query("SELECT partition_key FROM pages WHERE website_id = %s AND processed_hash IS NOT NULL"
                         " LIMIT 1", site)[0]["partition_key"]
            launched = stack.graphql(LAUNCH_BACKFILL, {"params": {
                "partitionNames": [good, recorded["partition_key"]],
                "assetSelection": [{"path": ["page_chunks"]}, {"path": ["chunk_embeddings"]}],
            }})["launchPartitionBackfill"]
            assert launched["__typename"] == "LaunchBackfillSuccess", launched

            def backfill_status() -> str | None:
                status = stack.graphql(BACKFILL_STATUS, {"id": launched["backfillId"]})["partitionBackfillOrError"]
                return None if status["status"] == "REQUESTED" else status["status"]

            assert wait_for("the backfill to end", backfill_status, interval=2) in ("COMPLETED", "COMPLETED_SUCCESS")
            backfill_runs = [r for r in stack.runs() if r.dagster_run.tags.get(BACKFILL_TAG) == launched["backfillId"]]
            handed = [  # a run per contiguous range of the backfill's partitions
                e.asset_materialization.metadata for r in backfill_runs for e in stack.instance.all_logs(
                    r.dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
                if e.asset_materialization.asset_key == dg.AssetKey("chunk_embeddings")]
            assert sum(m["quarantined_pages_not_waited_for"].value for m in handed) == 1

            # Released once the provider takes it: processed by the next page run.
            provider.refuse_inputs_containing = ""
            assert cli_main(["retry-pages", "--tenant", "shop"]) == 0  # DATABASE_URL: the stack's
            wait_for("the released page stored", lambda: failure() is None and settled(site), interval=1)


def query_commit(database_url: str, sql: str) -> None:
    with connect(database_url) as conn:
        conn.execute(sql)
        conn.commit()
