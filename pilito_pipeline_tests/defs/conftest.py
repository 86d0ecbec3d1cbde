"""Fixtures for the Dagster layer: a real (temporary) Dagster instance, resources on the test
database, and one pass of what the daemon does (sensors, then the runs they request)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest

from pilito_pipeline.defs.checks import RULES, knowledge_run_checks
from pilito_pipeline.defs.crawl_assets import website_crawl
from pilito_pipeline.defs.io_managers import run_values_io_manager
from pilito_pipeline.defs.page_assets import chunk_embeddings, page_chunks
from pilito_pipeline.defs.partitions import TENANT_TAG
from pilito_pipeline.defs.resources import CrawlerResource, DatabaseResource, EmbeddingResource
from pilito_pipeline.defs.sensors import pending_pages_sensor, website_crawl_sensor
from pilito_pipeline.app.demo import serve_demo_site
from pilito_pipeline.store.db import connect
from pilito_pipeline.store.websites import register_website

PAGE_ASSETS = [page_chunks, chunk_embeddings]
KNOWLEDGE_CHECKS = [knowledge_run_checks]


@pytest.fixture(scope="module")
def demo_site() -> Iterator[str]:
    server, url = serve_demo_site("127.0.0.1", 0)
    yield url
    server.shutdown()


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def resources(database_url: str) -> dict[str, Any]:
    database = DatabaseResource(database_url=database_url)
    return {
        "database": database,
        "crawler": CrawlerResource(rate_limit_seconds=0.0, allowed_hosts=["127.0.0.1"]),
        "embedder": EmbeddingResource(model="all-MiniLM-L6-v2"),  # fast; these tests are about Dagster, not the model
        "page_values_io_manager": run_values_io_manager,
    }


def run_sensors_and_runs(instance: dg.DagsterInstance, resources: dict[str, Any]) -> dict[str, int]:
    """What the daemon does: website sensor → crawl runs, pages sensor → page runs until it is idle.

    Returns run counts and the embedding metadata summed over the page runs.
    """
    launched = {"crawl_runs": 0, "page_runs": 0, "embeddings_computed": 0, "embeddings_reused": 0}
    context = dg.build_sensor_context(instance=instance, resources={"database": resources["database"]})
    result = website_crawl_sensor(context)
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    for request in result.run_requests:
        outcome = dg.materialize([website_crawl], partition_key=request.partition_key,
                                 instance=instance, resources=resources, tags=request.tags)
        assert outcome.success
        launched["crawl_runs"] += 1

    sensor_resources = {"database": resources["database"], "embedder": resources["embedder"]}
    # A new site's first page run is small (FIRST_RUN_PAGES): run the sensor until it has nothing to launch.
    while requests := pending_pages_sensor(
        dg.build_sensor_context(instance=instance, resources=sensor_resources)
    ).run_requests:
        for request in requests:
            assert TENANT_TAG in request.tags
            outcome = dg.materialize(
                [*PAGE_ASSETS, *KNOWLEDGE_CHECKS], instance=instance, resources=resources, tags=request.tags
            )
            assert outcome.success
            checks = outcome.get_asset_check_evaluations()
            assert len(checks) == len(RULES) and all(check.passed for check in checks), checks
            launched["page_runs"] += 1
            materialization = outcome.asset_materializations_for_node("chunk_embeddings")[0]  # one per page, same run metadata
            for name in ("embeddings_computed", "embeddings_reused"):
                launched[name] += materialization.metadata[name].value
    return launched


def table_counts(database_url: str) -> dict[str, int]:
    with connect(database_url) as conn:
        return conn.execute(
            "SELECT (SELECT count(*) FROM pages) AS pages,"
            " (SELECT count(*) FROM tenant_knowledge) AS chunks,"
            " (SELECT count(*) FROM tenant_knowledge WHERE full_embedding IS NOT NULL) AS embedded,"
            " (SELECT max(updated_at) FROM tenant_knowledge)::text AS last_write"
        ).fetchone()


def register(database_url: str, tenant: str, url: str) -> None:
    with connect(database_url) as conn:
        register_website(conn, tenant, url)
        conn.commit()


