"""Through the real daemon, launched through GraphQL as the UI sends it: every launch path obeys the
per-tenant rules. A page partition materialized from the catalog (no tenant tags) hands its page
over to the tenant's own page run and embeds nothing itself; a maintenance asset materialized from
the catalog (no run kind) is refused with where to launch it, and its job runs under the
maintenance queue limit."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from pilito_pipeline.defs.partitions import MAINTENANCE_TAG, RUN_KIND_TAG, TENANT_TAG
from pilito_pipeline.ingest.sources import ingest_faq
from pilito_pipeline.store.db import connect
from pilito_pipeline_tests.bench.bench_partitions import LAUNCH_RUN
from pilito_pipeline_tests.dagster_stack import Stack, dagster_stack, generate_site, served
from pilito_pipeline_tests.waiting import wait_for
from pilito_pipeline_tests.embed.openai_server import running_server

pytestmark = pytest.mark.slow

LOCATION = {"repositoryLocationName": "pilito_pipeline.definitions", "repositoryName": "__repository__"}


def launch(stack: Stack, job: str, assets: list[str], tags: dict[str, str]) -> str:
    """What the UI's Materialize button sends for a selection of assets (and a partition)."""
    params = {
        "selector": {**LOCATION, "jobName": job, "assetSelection": [{"path": [a]} for a in assets]},
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
        "mode": "default",
    }
    outcome = stack.graphql(LAUNCH_RUN, {"params": params})["launchRun"]
    assert outcome["__typename"] == "LaunchRunSuccess", outcome
    return outcome["run"]["runId"]


def ended(stack: Stack, run_id: str) -> dg.DagsterRun | None:
    run = stack.instance.get_run_by_id(run_id)
    return run if run and run.is_finished else None


def test_ui_launches_of_page_partitions_and_maintenance_assets_obey_the_rules(tmp_path: Path) -> None:
    generate_site(tmp_path / "site", 5)
    with running_server() as provider, served(tmp_path / "site") as url:
        env = {
            "CRAWL_ALLOWED_HOSTS": "127.0.0.1", "CRAWL_RATE_LIMIT_SECONDS": "0",
            "EMBEDDING_PROVIDER": "openai", "EMBEDDING_MODEL": "text-embedding-3-small",
            "EMBEDDING_DIMENSION": "384", "OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": provider.url,
        }
        with dagster_stack(tmp_path / "stack", env) as stack:

            def processed() -> list[str]:
                with connect(stack.database_url) as conn:
                    rows = conn.execute(
                        "SELECT partition_key FROM pages WHERE status = 'fetched' AND processed_hash = content_hash"
                        " ORDER BY partition_seq").fetchall()
                return [r["partition_key"] for r in rows]

            stack.register("shop", url)
            wait_for("the site's pages processed", lambda: len(processed()) == 5 and all(
                r.end_time for r in stack.page_runs("shop")), interval=1, diagnostics=stack.log_tail)
            page = processed()[0]
            tenant_runs = len(stack.page_runs("shop"))

            # One page partition materialized from the catalog: no tenant tags.
            run_id = launch(stack, "__ASSET_JOB", ["page_chunks", "chunk_embeddings"], {"dagster/partition": page})
            run = wait_for("the UI's run to end", lambda: ended(stack, run_id), interval=1)
            assert run.status == dg.DagsterRunStatus.SUCCESS
            materializations = [e.asset_materialization for e in stack.instance.all_logs(
                run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)]
            embeddings = next(m for m in materializations if m.asset_key == dg.AssetKey("chunk_embeddings"))
            assert embeddings.metadata["pages_handed_over"].value == 1
            assert "embeddings_computed" not in embeddings.metadata  # it embedded nothing itself
            # ... the tenant's own page run, under its limits, processed the page again.
            wait_for("a tenant page run for the handed-over page", lambda: len(stack.page_runs("shop")) > tenant_runs
                     and page in processed() and all(r.end_time for r in stack.page_runs("shop")), interval=1)
            (again,) = stack.page_runs("shop")[: len(stack.page_runs("shop")) - tenant_runs]
            assert again.dagster_run.tags[TENANT_TAG] == "shop"
            assert again.dagster_run.status == dg.DagsterRunStatus.SUCCESS

            # A maintenance asset materialized from the catalog is refused, with where to launch it.
            run_id = launch(stack, "__ASSET_JOB", ["entry_embeddings"], {})
            run = wait_for("the refused run to end", lambda: ended(stack, run_id), interval=1)
            assert run.status == dg.DagsterRunStatus.FAILURE
            failures = stack.instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
            assert "entry_embeddings_job" in failures[0].dagster_event.step_failure_data.user_failure_data.description

            # Its job carries the maintenance kind, so it queues under the maintenance limit, and runs.
            with connect(stack.database_url) as conn:
                ingest_faq(conn, _old_model_provider(provider.url), "shop", "Do you ship abroad?", "Yes.")
                conn.commit()
            run_id = launch(stack, "entry_embeddings_job", ["entry_embeddings"], {})
            run = wait_for("the entry job to end", lambda: ended(stack, run_id), interval=1)
            assert run.status == dg.DagsterRunStatus.SUCCESS, stack.log_tail()
            assert run.tags[RUN_KIND_TAG] == "maintenance" and run.tags[MAINTENANCE_TAG] == "entries"


def _old_model_provider(base_url: str):
    """An FAQ entry embedded by another model than the stack's, so the entry job has work."""
    from pilito_pipeline.embed.openai_provider import OpenAIProvider

    return OpenAIProvider("text-embedding-3-large", 384, api_key="sk-test", base_url=base_url)
