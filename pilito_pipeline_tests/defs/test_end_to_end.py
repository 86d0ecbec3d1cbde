"""Website in, searchable chunks out: through the real sensors, assets and IO managers on a real
Dagster instance and the embedded PostgreSQL, crawling the bundled sample site on 127.0.0.1."""

from __future__ import annotations

import threading
from typing import Any

import dagster as dg
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from dagster._core.test_utils import create_run_for_test

from pilito_pipeline.defs.crawl_assets import website_crawl
from pilito_pipeline.defs.maintenance import ANN_RUN_TAGS, ann_index_sensor, tenant_ann_indexes
from pilito_pipeline.defs.partitions import (
    BACKFILL_TAG, RUN_KIND_TAG, TENANT_TAG, pages_partitions, websites_partitions,
)
from pilito_pipeline.defs.resources import DatabaseResource
from pilito_pipeline.defs.sensors import pending_pages_sensor, website_crawl_sensor
from pilito_pipeline.retrieval import Retriever
from pilito_pipeline.settings import Settings
from pilito_pipeline.store.db import connect
from pilito_pipeline.store.pages import count_pending
from pilito_pipeline_tests.defs.conftest import (
    KNOWLEDGE_CHECKS, PAGE_ASSETS, register, run_sensors_and_runs, table_counts,
)

pytestmark = pytest.mark.slow


def test_website_to_retrievable_chunks_and_rerun_changes_nothing(
    database_url: str, demo_site: str, instance: dg.DagsterInstance, resources: dict[str, Any]
) -> None:
    register(database_url, "acme", demo_site)
    launched = run_sensors_and_runs(instance, resources)
    assert launched["crawl_runs"] == 1
    assert launched["embeddings_computed"] > 0
    assert 1 <= launched["page_runs"] <= 2  # a dozen pages: batched, not one run per page
    pages = instance.get_dynamic_partitions(pages_partitions.name)
    assert len(pages) >= 10
    with connect(database_url) as conn:
        duplicates = conn.execute("SELECT url FROM pages WHERE failure_reason LIKE 'same text as %'").fetchall()
    assert len(duplicates) == 1 and duplicates[0]["url"] in (demo_site, demo_site + "index.html")
    first = table_counts(database_url)
    assert first["chunks"] >= len(pages) and first["embedded"] > 0

    with Retriever.from_settings(Settings(database_url=database_url, embedding_model="all-MiniLM-L6-v2")) as retriever:
        result = retriever.retrieve_context("Do you offer scholarships for students?", "acme").to_dict()
    assert "scholarship" in result["primary_context"][0]["url"]

    # The same website requested again: crawled again, but nothing changed, so no page run.
    register(database_url, "acme", demo_site)
    launched = run_sensors_and_runs(instance, resources)
    assert launched["crawl_runs"] == 1 and launched["page_runs"] == 0
    assert table_counts(database_url) == first
    assert instance.get_dynamic_partitions(pages_partitions.name) == pages

    # Forcing the page assets to run again over every page, as the UI sends it (no tenant tags): the
    # run hands the pages over and ends; the tenant's own page run does the work, under the tenant's
    # limits: zero provider calls, no row written.
    outcome = dg.materialize(PAGE_ASSETS, instance=instance, resources=resources, tags={
        ASSET_PARTITION_RANGE_START_TAG: pages[0], ASSET_PARTITION_RANGE_END_TAG: pages[-1]})
    handed = outcome.asset_materializations_for_node("chunk_embeddings")[0].metadata
    assert handed["pages_handed_over"].value == len(pages) and "embeddings_computed" not in handed
    again = run_sensors_and_runs(instance, resources)
    assert again["page_runs"] >= 1 and again["embeddings_computed"] == 0 and again["embeddings_reused"] > 0
    assert table_counts(database_url) == first


def test_retrieval_never_crosses_tenants(
    database_url: str, demo_site: str, instance: dg.DagsterInstance, resources: dict[str, Any]
) -> None:
    register(database_url, "tenant-a", demo_site)
    run_sensors_and_runs(instance, resources)
    with Retriever.from_settings(Settings(database_url=database_url, embedding_model="all-MiniLM-L6-v2")) as retriever:
        own = retriever.retrieve_context("scholarship", "tenant-a").to_dict()
        other = retriever.retrieve_context("scholarship", "tenant-b").to_dict()
    assert own["total_chunks"] > 0
    assert other["total_chunks"] == 0


def test_a_tenant_past_the_threshold_gets_its_own_ann_index(
    database_url: str, demo_site: str, instance: dg.DagsterInstance, resources: dict[str, Any]
) -> None:
    database = DatabaseResource(database_url=database_url, ann_index_min_chunks=10)
    resources = {**resources, "database": database}
    register(database_url, "big", demo_site)
    run_sensors_and_runs(instance, resources)
    with connect(database_url) as conn:  # page runs write rows only; the index is maintenance's job
        assert conn.execute("SELECT count(*) AS n FROM tenant_ann_indexes").fetchone()["n"] == 0
    sensor = ann_index_sensor(dg.build_sensor_context(instance=instance, resources={"database": database}))
    assert len(sensor.run_requests) == 1
    assert dg.materialize([tenant_ann_indexes], instance=instance, resources={"database": database},
                          tags=ANN_RUN_TAGS).success
    with connect(database_url) as conn:
        registered = conn.execute("SELECT tenant_id FROM tenant_ann_indexes").fetchall()
    assert [row["tenant_id"] for row in registered] == ["big"]
    with Retriever.from_settings(Settings(database_url=database_url, embedding_model="all-MiniLM-L6-v2")) as retriever:
        result = retriever.retrieve_context("Do you offer scholarships for students?", "big").to_dict()
    assert result["performance"]["dense_plan"] == "hnsw"
    assert "scholarship" in result["primary_context"][0]["url"]


def test_a_page_batch_still_running_is_not_launched_again(
    database_url: str, demo_site: str, instance: dg.DagsterInstance, resources: dict[str, Any]
) -> None:
    register(database_url, "acme", demo_site)
    context = dg.build_sensor_context(instance=instance, resources={"database": resources["database"]})
    result = website_crawl_sensor(context)
    instance.add_dynamic_partitions(websites_partitions.name, [r.partition_key for r in result.run_requests])
    (crawl,) = result.run_requests
    assert dg.materialize([website_crawl], partition_key=crawl.partition_key, instance=instance,
                          resources=resources, tags=crawl.tags).success

    def page_requests() -> list[dg.RunRequest]:
        sensor_resources = {"database": resources["database"], "embedder": resources["embedder"]}
        return pending_pages_sensor(dg.build_sensor_context(instance=instance, resources=sensor_resources)).run_requests

    (batch,) = page_requests()
    create_run_for_test(instance, job_name="__ASSET_JOB", tags=batch.tags, status=dg.DagsterRunStatus.STARTED)
    assert page_requests() == []  # the same work is still running: not launched twice


def test_a_ui_backfill_of_the_page_assets_becomes_tenant_runs(
    database_url: str, demo_site: str, instance: dg.DagsterInstance, resources: dict[str, Any]
) -> None:
    for tenant in ("tenant-a", "tenant-b"):
        register(database_url, tenant, demo_site)
    run_sensors_and_runs(instance, resources)
    before = table_counts(database_url)
    pages = instance.get_dynamic_partitions(pages_partitions.name)
    with connect(database_url) as conn:
        with_text = conn.execute("SELECT count(*) AS n FROM pages WHERE status = 'fetched'").fetchone()["n"]

    # A run of "Materialize all" from the UI: a range of both tenants' pages, tagged with its backfill
    # (on an instance of its own: a second run at once in this process).
    outcome: list[dg.ExecuteInProcessResult] = []

    def backfill_run() -> None:
        with dg.instance_for_test() as backfill_instance:
            backfill_instance.add_dynamic_partitions(pages_partitions.name, pages)
            outcome.append(dg.materialize(
                [*PAGE_ASSETS, *KNOWLEDGE_CHECKS], instance=backfill_instance, resources=resources, tags={
                    BACKFILL_TAG: "uibackfl", ASSET_PARTITION_RANGE_START_TAG: pages[0],
                    ASSET_PARTITION_RANGE_END_TAG: pages[-1]}))

    backfill = threading.Thread(target=backfill_run)
    backfill.start()
    launched = {"page_runs": 0, "embeddings_computed": 0, "embeddings_reused": 0}
    while backfill.is_alive():  # the daemon's part: the pages sensor gives the pages their tenants' runs
        for name, count in run_sensors_and_runs(instance, resources).items():
            launched[name] = launched.get(name, 0) + count
        backfill.join(timeout=0.5)
        assert table_counts(database_url) == before  # nothing taken away meanwhile: every chunk still answers

    (result,) = outcome
    assert result.success
    handed = result.asset_materializations_for_node("chunk_embeddings")[0].metadata
    assert handed["pages_handed_over"].value == with_text and "embeddings_computed" not in handed
    assert launched["page_runs"] == 2 and launched["embeddings_computed"] == 0 and launched["embeddings_reused"] > 0
    assert table_counts(database_url) == before
    with connect(database_url) as conn:
        assert count_pending(conn, pages, resources["embedder"].model_name) == 0
    tenants_runs = instance.get_runs(filters=dg.RunsFilter(tags={RUN_KIND_TAG: "pages"}))
    assert all(BACKFILL_TAG not in run.tags and TENANT_TAG in run.tags for run in tenants_runs)
