"""Progress where operators look: the crawl's progress (log, observations, the websites row), page
runs' rates, and `pilito-pipeline status` (one line per site, its last error under it)."""

from __future__ import annotations

from typing import Any

import dagster as dg
import pytest

from pilito_pipeline.defs.crawl_assets import website_crawl
from pilito_pipeline.app.status import render_status
from pilito_pipeline.store.db import connect
from pilito_pipeline.store.site_status import site_statuses
from pilito_pipeline_tests.defs.conftest import register
from pilito_pipeline_tests.ops.conftest import crawl_and_process
from pilito_pipeline_tests.services import free_port

pytestmark = pytest.mark.slow
MODEL = "all-MiniLM-L6-v2"  # the resources' embedder (defs/conftest.py)


def test_crawl_progress_page_rates_and_status_screen(
    database_url: str, demo_site: str, instance: dg.DagsterInstance, resources: dict[str, Any]
) -> None:
    register(database_url, "acme", demo_site)
    with connect(database_url) as conn:
        [queued] = site_statuses(conn, embedding_model=MODEL)
    assert queued.status == "pending" and "queued" in render_status([queued])

    crawl_and_process(instance, resources)

    # The crawl: progress observations while it ran, rates on its materialisation.
    observations = [r.asset_observation for r in instance.fetch_observations(website_crawl.key, limit=100).records]
    assert observations, "no progress observation"
    last = observations[0].metadata
    assert last["done"].value == last["known"].value > 10
    crawl = instance.fetch_materializations(website_crawl.key, limit=1).records[0].asset_materialization
    assert crawl.metadata["pages_per_second"].value > 0

    # The page run: pages and embeddings per second.
    embeddings = instance.fetch_materializations(dg.AssetKey("chunk_embeddings"), limit=1).records[0]
    metadata = embeddings.asset_materialization.metadata
    assert metadata["pages_per_second"].value > 0 and metadata["embeddings_per_second"].value > 0

    with connect(database_url) as conn:
        [site] = site_statuses(conn, "acme", embedding_model=MODEL)
        assert site_statuses(conn, "other", embedding_model=MODEL) == []
    assert site.status == "ready" and site.pending == 0 and site.failed == 0
    assert site.indexed >= 10 and site.chunks > site.indexed and site.last_error is None
    assert site.progress["seconds"] > 0 and sum(site.progress.get(k, 0) for k in ("fetched", "skipped")) == site.pages
    screen = render_status([site])
    assert "acme" in screen and demo_site in screen and "last error" not in screen


def test_status_shows_the_last_error(
    database_url: str, instance: dg.DagsterInstance, resources: dict[str, Any]
) -> None:
    unreachable = f"http://127.0.0.1:{free_port()}/"
    register(database_url, "broken", unreachable)
    with connect(database_url) as conn:
        [website] = site_statuses(conn, embedding_model=MODEL)
    instance.add_dynamic_partitions("websites", [website.partition_key])
    dg.materialize([website_crawl], partition_key=website.partition_key, instance=instance,
                   resources=resources, raise_on_error=False)
    with connect(database_url) as conn:
        [site] = site_statuses(conn, "broken", embedding_model=MODEL)
    assert site.last_error, site
    screen = render_status([site])
    assert screen.splitlines()[1].startswith("w") and "last error: " in screen
    assert len(screen.splitlines()) == 4  # header, the site, its URL, its last error
