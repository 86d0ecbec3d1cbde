"""Page runs with the embedding service (EMBEDDING_SERVICE_URL) instead of the model in process:
switching between the two re-embeds nothing (the same model name, the stored vectors reused), and
with the service down a page run fails and its pages stay pending until the service is back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from pilito_pipeline_tests.services import free_port
from pilito_pipeline.defs.page_assets import chunk_embeddings, page_chunks
from pilito_pipeline.defs.partitions import RUN_KIND_TAG, TENANT_PAGES_TAG
from pilito_pipeline.defs.resources import EmbeddingResource
from pilito_pipeline.embed import E5Provider
from pilito_pipeline.embed.service import EmbeddingHTTPServer, running_service
from pilito_pipeline.store.db import connect
from pilito_pipeline.store.pages import request_reprocessing
from pilito_pipeline_tests.defs.conftest import register, run_sensors_and_runs, table_counts
from pilito_pipeline_tests.dagster_stack import generate_site, served
from pilito_pipeline_tests.defs.test_model_change import stored_models
from pilito_pipeline_tests.defs.test_retry_budget import one_page

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def service_model() -> E5Provider:
    return E5Provider()


@pytest.fixture
def service(service_model: E5Provider) -> Iterator[EmbeddingHTTPServer]:
    with running_service(service_model) as server:
        yield server


@pytest.fixture
def small_site(tmp_path: Path) -> Iterator[str]:
    generate_site(tmp_path / "site", 6, name="shop")
    with served(tmp_path / "site") as url:
        yield url


def all_page_keys(database_url: str) -> list[str]:
    with connect(database_url) as conn:
        return [row["partition_key"] for row in conn.execute("SELECT partition_key FROM pages WHERE content_hash IS NOT NULL")]


def test_switching_between_in_process_and_the_service_re_embeds_nothing(
    database_url: str, small_site: str, instance: dg.DagsterInstance, resources: dict[str, Any],
    service: EmbeddingHTTPServer,
) -> None:
    in_process = EmbeddingResource()  # e5, the default
    register(database_url, "shop", small_site)
    first = run_sensors_and_runs(instance, {**resources, "embedder": in_process})
    assert first["page_runs"] >= 1 and first["embeddings_computed"] > 0
    models_before, counts_before = stored_models(database_url), table_counts(database_url)

    switched = {**resources, "embedder": EmbeddingResource(service_url=service.url)}
    assert switched["embedder"].model_name == in_process.model_name
    assert run_sensors_and_runs(instance, switched)["page_runs"] == 0  # nothing is pending after the switch

    # Every page made pending again (as a UI re-materialization does): all embeddings reused, none sent.
    with connect(database_url) as conn:
        request_reprocessing(conn, all_page_keys(database_url))
        conn.commit()
    again = run_sensors_and_runs(instance, switched)
    assert again["page_runs"] >= 1
    assert again["embeddings_computed"] == 0 and again["embeddings_reused"] == first["embeddings_computed"]
    assert sum(service.embedder.batches.values()) == 0
    assert stored_models(database_url) == models_before == {in_process.model_name}
    assert table_counts(database_url) == counts_before  # not one row rewritten


def test_with_the_service_down_the_page_run_fails_and_its_page_waits_for_the_service(
    database_url: str, instance: dg.DagsterInstance, resources: dict[str, Any], service_model: E5Provider
) -> None:
    """As for OpenAI: the client's retries, the step's retries, then the run fails; the page stays
    pending (nothing stored, nothing lost) and the next run, with the service back, embeds it."""
    key = one_page(database_url, instance)
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    def page_run() -> bool:
        outcome = dg.materialize(
            [page_chunks, chunk_embeddings], partition_key=key, instance=instance,
            resources={**resources, "embedder": EmbeddingResource(service_url=url)}, raise_on_error=False,
            tags={RUN_KIND_TAG: "pages", TENANT_PAGES_TAG: "shop"},
        )
        return outcome.success

    assert not page_run()
    with connect(database_url) as conn:
        assert conn.execute("SELECT count(*) AS n FROM tenant_knowledge").fetchone()["n"] == 0
        assert conn.execute("SELECT processed_hash FROM pages WHERE partition_key = %s", (key,)).fetchone()["processed_hash"] is None
    with running_service(service_model, "127.0.0.1", port) as server:
        assert page_run()
        assert server.embedder.batches["latent_terms"] >= 1  # passages with their latent terms, one pass
    with connect(database_url) as conn:
        assert conn.execute("SELECT count(*) AS n FROM tenant_knowledge WHERE source_id = %s", (key,)).fetchone()["n"] > 0
        row = conn.execute("SELECT processed_hash = content_hash AS done FROM pages WHERE partition_key = %s", (key,)).fetchone()
        assert row["done"]
