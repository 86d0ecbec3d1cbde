"""Bounded retries, decided in one place (pilito_pipeline/retries.py), measured against the real
OpenAI client and a local OpenAI-compatible server: how many calls a failing provider gets per
page-run attempt, one call for a refused request, and which failures Dagster re-executes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster._core.test_utils import create_run_for_test
from dagster._daemon.auto_run_reexecution.auto_run_reexecution import should_retry

from pilito_pipeline import retries
from pilito_pipeline.defs.page_assets import chunk_embeddings, page_chunks
from pilito_pipeline.defs.partitions import (
    RUN_KIND_TAG, TENANT_PAGES_TAG, crawl_run_tags, page_run_tags, pages_partitions,
)
from pilito_pipeline.defs.resources import EmbeddingResource
from pilito_pipeline.embed import EmbeddingRequestError, ProviderUnavailable
from pilito_pipeline.embed.openai_provider import OpenAIProvider
from pilito_pipeline.store import pages as page_store
from pilito_pipeline.store.db import connect
from pilito_pipeline.store.websites import register_website
from pilito_pipeline.text import document_hash, extract_document
from pilito_pipeline_tests.embed.openai_server import EmbeddingServer, Failure, running_server

DAGSTER_YAML = Path(__file__).resolve().parents[2] / "dagster.yaml"
HTML = ("<html><head><title>Delivery</title></head><body><main><h1>Delivery</h1>"
        "<p>We deliver across Tehran within two working days; orders above five million rials ship free."
        " Parcels outside Tehran take four to six working days and are tracked by text message.</p>"
        "</main></body></html>")


@pytest.fixture
def embedding_server() -> Iterator[EmbeddingServer]:
    with running_server() as server:
        yield server


def openai_provider(server: EmbeddingServer) -> OpenAIProvider:
    """The provider as the pipeline builds it: the policy's client retries (no override)."""
    return OpenAIProvider("text-embedding-3-small", 384, api_key="sk-test", base_url=server.url)


def test_a_failing_provider_gets_the_policys_attempts_per_request(embedding_server: EmbeddingServer) -> None:
    embedding_server.always_fail = Failure(500, {"Retry-After-Ms": "10"})
    with pytest.raises(ProviderUnavailable):
        openai_provider(embedding_server).embed(["hello"])
    assert len(embedding_server.authorizations) == retries.PROVIDER_ATTEMPTS_PER_REQUEST == 3


@pytest.mark.parametrize("status", [400, 401])
def test_a_refused_request_makes_exactly_one_call(embedding_server: EmbeddingServer, status: int) -> None:
    embedding_server.always_fail = Failure(status)
    with pytest.raises(EmbeddingRequestError):
        openai_provider(embedding_server).embed(["hello"])
    assert len(embedding_server.authorizations) == 1


def test_dagster_yaml_run_retries_are_the_policys() -> None:
    """Run retries only for runs that died without a step failure: a Failure(allow_retries=False)
    or an exhausted step RetryPolicy is final for its run."""
    run_retries = yaml.safe_load(DAGSTER_YAML.read_text())["run_retries"]
    with dg.instance_for_test(overrides={"run_retries": run_retries}) as instance:
        assert instance.run_retries_enabled
        assert instance.run_retries_max_retries == retries.RUN_RETRIES
        assert instance.run_retries_retry_on_asset_or_op_failure is False
    run_attempts_after_a_crash = 1 + run_retries["max_retries"]
    run_attempts_after_a_step_failure = 1 + (run_retries["max_retries"] if run_retries["retry_on_asset_or_op_failure"] else 0)
    assert run_attempts_after_a_crash == 2 and run_attempts_after_a_step_failure == 1
    assert chunk_embeddings.op.retry_policy.max_retries == retries.EMBEDDING_STEP_RETRIES


def one_page(database_url: str, instance: dg.DagsterInstance) -> str:
    """A stored, registered page with a document, as a crawl leaves it; returns its partition key."""
    document = extract_document(HTML, "http://shop.test/delivery")
    with connect(database_url) as conn:
        website = register_website(conn, "shop", "http://shop.test/")
        key, _ = page_store.record_page(conn, "shop", website.id, page_store.PageRecord(
            url="http://shop.test/delivery", depth=1, status="fetched", title=document.title,
            language=document.language, document=document.to_dict(), content_hash=document_hash(document)))
        page_store.mark_partitions_registered(conn, [key])
        conn.commit()
    instance.add_dynamic_partitions(pages_partitions.name, [key])
    return key


def run_page(instance: dg.DagsterInstance, resources: dict[str, Any], server: EmbeddingServer, key: str) -> bool:
    embedder = EmbeddingResource(provider="openai", model="text-embedding-3-small", dimension=384,
                                 openai_api_key="sk-test", openai_base_url=server.url)
    result = dg.materialize([page_chunks, chunk_embeddings], partition_key=key, instance=instance,
                            resources={**resources, "embedder": embedder}, raise_on_error=False,
                            tags={RUN_KIND_TAG: "pages", TENANT_PAGES_TAG: "shop"})  # a page run of the tenant
    return result.success


@pytest.mark.slow  # the step's retry policy waits ~10 s, then ~20 s
def test_one_page_run_attempt_makes_the_policys_calls_to_a_failing_provider(
    database_url: str, instance: dg.DagsterInstance, resources: dict[str, Any], embedding_server: EmbeddingServer
) -> None:
    """Before: 5 client attempts x 5 step attempts = 25 calls per run attempt, x 3 run attempts."""
    key = one_page(database_url, instance)
    embedding_server.always_fail = Failure(503, {"Retry-After-Ms": "10"})

    assert not run_page(instance, resources, embedding_server, key)

    assert len(embedding_server.authorizations) == retries.PROVIDER_ATTEMPTS_PER_RUN_ATTEMPT == 9
    embedding_server.always_fail = None
    assert run_page(instance, resources, embedding_server, key)  # the provider is back: the page is embedded
    with connect(database_url) as conn:
        assert conn.execute("SELECT count(*) AS n FROM tenant_knowledge WHERE source_id = %s", (key,)).fetchone()["n"] > 0


def test_a_refused_request_fails_the_page_run_after_one_call(
    database_url: str, instance: dg.DagsterInstance, resources: dict[str, Any], embedding_server: EmbeddingServer
) -> None:
    key = one_page(database_url, instance)
    embedding_server.always_fail = Failure(401, message="Incorrect API key provided")

    assert not run_page(instance, resources, embedding_server, key)

    assert len(embedding_server.authorizations) == 1  # no client retry, no step retry


@pytest.mark.parametrize("kind", ["crawl", "pages"])
def test_a_dead_crawl_or_page_run_is_never_re_executed_by_dagster(database_url: str, kind: str) -> None:
    """A dead run is relaunched by our sensors alone (dead_run_sensor renews the crawl request; the
    pages sensor relaunches the pages): a Dagster run retry as well would run the work twice."""
    run_retries = yaml.safe_load(DAGSTER_YAML.read_text())["run_retries"]
    tags = crawl_run_tags("shop") if kind == "crawl" else page_run_tags(["shop"], ("p1", 1), ("p2", 2))
    with dg.instance_for_test(overrides={"run_retries": run_retries}) as instance:
        for run_tags, retried in ((tags, False), ({}, True)):  # untagged: what Dagster would do
            run = create_run_for_test(instance, job_name="__ASSET_JOB", tags=run_tags, status=dg.DagsterRunStatus.STARTED)
            instance.report_run_failed(run, "The run worker is gone")  # as dead_run_sensor reports it
            assert should_retry(instance.get_run_by_id(run.run_id), instance) is retried


@pytest.mark.slow  # the step's retry policy waits ~10 s
def test_a_retried_embedding_step_still_has_its_chunks_and_nothing_of_the_page_is_stored_beside_it(
    database_url: str, instance: dg.DagsterInstance, resources: dict[str, Any], embedding_server: EmbeddingServer
) -> None:
    """page_chunks hands its values over in the run's memory (no pickled copy of every page kept in
    the database for good, as `asset_values` did): a retried step still gets them."""
    key = one_page(database_url, instance)
    embedding_server.fail_next(*[Failure(503, {"Retry-After-Ms": "10"})] * retries.PROVIDER_ATTEMPTS_PER_REQUEST)

    assert run_page(instance, resources, embedding_server, key)

    assert len(embedding_server.authorizations) == retries.PROVIDER_ATTEMPTS_PER_REQUEST + 1
    with connect(database_url) as conn:
        assert conn.execute("SELECT count(*) AS n FROM tenant_knowledge WHERE source_id = %s", (key,)).fetchone()["n"] > 0
        assert conn.execute("SELECT to_regclass('asset_values') AS t").fetchone()["t"] is None
