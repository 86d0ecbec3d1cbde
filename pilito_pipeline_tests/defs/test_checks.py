"""The knowledge checks: a page run's checks look at its pages only and each can fail; another
tenant's drift fails only the scheduled full audit, which names that tenant."""

from __future__ import annotations

import dagster as dg
import psycopg

from pilito_pipeline.defs.checks import (
    RULES,
    knowledge_audit,
    knowledge_audit_job,
    knowledge_audit_schedule,
    knowledge_base,
    knowledge_run_checks,
)
from pilito_pipeline.defs.io_managers import run_values_io_manager
from pilito_pipeline.defs.page_assets import chunk_embeddings
from pilito_pipeline.defs.partitions import (
    PARTITION_RANGE_END_TAG,
    PARTITION_RANGE_START_TAG,
    pages_partitions,
)
from pilito_pipeline.defs.resources import DatabaseResource, EmbeddingResource
from pilito_pipeline.store.db import connect
from pilito_pipeline.store.knowledge import PageVersion, store_pages
from pilito_pipeline.store.websites import register_website
from pilito_pipeline_tests.defs.conftest import PAGE_ASSETS
from pilito_pipeline_tests.store.test_knowledge import make_rows

EMBEDDER = EmbeddingResource()


def add_pages(conn: psycopg.Connection, tenant: str, count: int) -> list[str]:
    """`count` live pages of `tenant` with 3 correct chunks each (one parent), processed."""
    website = register_website(conn, tenant, f"http://127.0.0.1:1/{tenant}/")
    keys = [row["partition_key"] for row in conn.execute(
        "INSERT INTO pages (tenant_id, website_id, url, status, content_hash, document)"
        " SELECT %s, %s, 'http://127.0.0.1:1/' || %s || '/' || n, 'fetched', 'h', '{}'"
        " FROM generate_series(1, %s) AS n RETURNING partition_key",
        (tenant, website.id, tenant, count)).fetchall()]
    pages = {}
    for key in keys:
        rows = make_rows((tenant, "website", key), 3, with_parent=True)
        for row in rows:
            row.embedding_model = None if row.is_parent else EMBEDDER.model_name
        pages[key] = PageVersion(tenant, "h", rows)
    store_pages(conn, pages, EMBEDDER.model_name)
    return keys


def run_checks(instance: dg.DagsterInstance, database_url: str, keys: list[str]) -> dict[str, dg.AssetCheckEvaluation]:
    """The page run's checks over `keys` (a range, as the pages sensor launches them)."""
    instance.add_dynamic_partitions(pages_partitions.name, keys)
    database = DatabaseResource(database_url=database_url)
    outcome = dg.materialize(
        [*PAGE_ASSETS, knowledge_run_checks],
        selection=dg.AssetSelection.checks(knowledge_run_checks),
        instance=instance,
        resources={"database": database, "embedder": EMBEDDER,
                   "page_values_io_manager": run_values_io_manager},
        tags={PARTITION_RANGE_START_TAG: keys[0], PARTITION_RANGE_END_TAG: keys[-1]},
        raise_on_error=False,
    )
    return {e.check_name: e for e in outcome.get_asset_check_evaluations()}


def run_audit(instance: dg.DagsterInstance, database_url: str) -> dict[str, dg.AssetCheckEvaluation]:
    job = dg.Definitions(
        assets=[knowledge_base], asset_checks=[knowledge_audit], jobs=[knowledge_audit_job],
        resources={"database": DatabaseResource(database_url=database_url), "embedder": EMBEDDER},
    ).resolve_job_def(knowledge_audit_job.name)
    result = job.execute_in_process(instance=instance, raise_on_error=False)
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_each_run_check_fails_on_its_drift_in_the_runs_pages(database_url: str, instance: dg.DagsterInstance) -> None:
    with connect(database_url) as conn:
        keys = add_pages(conn, "acme", 5)
        conn.commit()
    assert {name: e.passed for name, e in run_checks(instance, database_url, keys).items()} == {
        rule.name: True for rule in RULES}

    lost, removed, other_model, empty = keys[:4]
    with connect(database_url) as conn:
        conn.execute("DELETE FROM tenant_knowledge WHERE source_id = %s AND chunk_index = 2", (lost,))
        conn.execute("UPDATE pages SET document = NULL, status = 'gone' WHERE partition_key = %s", (removed,))
        conn.execute("UPDATE tenant_knowledge SET embedding_model = 'other' WHERE source_id = %s AND chunk_index = 1",
                     (other_model,))
        conn.execute("DELETE FROM tenant_knowledge WHERE source_id = %s", (empty,))
        conn.commit()
    evaluations = run_checks(instance, database_url, keys)

    assert {name: (e.passed, e.metadata["count"].value) for name, e in evaluations.items()} == {
        "chunk_sets_complete": (False, 1),
        "no_chunks_of_removed_pages": (False, 3),
        "embeddings_match_model": (False, 1),
        "processed_pages_have_chunks": (False, 1),
        "no_quarantined_pages": (True, 0),  # test_page_failures.py
    }
    assert all(e.metadata["tenants"].value.startswith("acme: ") for e in evaluations.values() if not e.passed)
    assert all(e.metadata["pages_checked"].value == 5 for e in evaluations.values())
    # A run over the untouched page sees none of it.
    assert all(e.passed for e in run_checks(instance, database_url, keys[4:]).values())


def test_another_tenants_drift_fails_only_the_audit(database_url: str, instance: dg.DagsterInstance) -> None:
    with connect(database_url) as conn:
        mine = add_pages(conn, "acme", 2)
        theirs = add_pages(conn, "beta", 2)
        conn.execute("UPDATE tenant_knowledge SET embedding_model = 'other' WHERE tenant_id = 'beta'")
        conn.execute("UPDATE pages SET document = NULL WHERE partition_key = %s", (theirs[0],))
        conn.commit()

    assert all(e.passed for e in run_checks(instance, database_url, mine).values())
    audit = run_audit(instance, database_url)

    assert {name: e.passed for name, e in audit.items()} == {
        "chunk_sets_complete": True,
        "no_chunks_of_removed_pages": False,
        "embeddings_match_model": False,
        "processed_pages_have_chunks": True,
        "no_quarantined_pages": True,
    }
    assert audit["embeddings_match_model"].metadata["tenants"].value == "beta: 4"
    assert audit["no_chunks_of_removed_pages"].metadata["tenants"].value == "beta: 3"
    assert audit["no_chunks_of_removed_pages"].metadata["pages_checked"].value == "all"


def test_the_audit_is_scheduled_and_page_runs_do_not_include_it() -> None:
    from pilito_pipeline.definitions import defs

    assert knowledge_audit_schedule.job_name == knowledge_audit_job.name
    assert defs.get_schedule_def(knowledge_audit_schedule.name).cron_schedule == "30 3 * * *"
    run_check_keys = {spec.key for spec in knowledge_run_checks.check_specs}
    audit_check_keys = {spec.key for spec in knowledge_audit.check_specs}
    assert {key.asset_key for key in run_check_keys} == {chunk_embeddings.key}
    assert {key.asset_key for key in audit_check_keys} == {knowledge_base.key}  # not selected with the page assets
