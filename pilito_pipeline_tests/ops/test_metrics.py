"""Both Prometheus endpoints, scraped over HTTP: ingestion metrics (read from the Dagster instance
the runs reported to) and retrieval metrics (the chat backend's registry); names present, values
moving as crawls, page runs and retrievals happen."""

from __future__ import annotations

import urllib.request
from typing import Any

import dagster as dg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pilito_pipeline.app.metrics_exporter import ingestion_registry, serve_ingestion_metrics
from pilito_pipeline.retrieval import Retriever
from pilito_pipeline.settings import Settings
from pilito_pipeline_tests.defs.conftest import register
from pilito_pipeline_tests.ops.conftest import crawl_and_process

pytestmark = pytest.mark.slow


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_ingestion_and_retrieval_endpoints(
    database_url: str, demo_site: str, instance: dg.DagsterInstance, resources: dict[str, Any]
) -> None:
    server, _ = serve_ingestion_metrics(instance, 0, "127.0.0.1")
    try:
        port = server.server_port
        before = scrape(port)
        assert sample(before, "crawl_pages_total", outcome="fetched") == 0

        register(database_url, "acme", demo_site)
        crawl_and_process(instance, resources)
        first = scrape(port)
        fetched = sample(first, "crawl_pages_total", outcome="fetched")
        computed = sample(first, "embeddings_computed_total")
        assert fetched >= 10 and computed > 0
        assert sample(first, "crawl_total", status="success") == 1
        assert sample(first, "page_process_total", status="success") >= 10
        assert sample(first, "knowledge_upsert_rows_total", action="inserted") > 0
        assert sample(first, "chunks_created_total", chunk_type="website") == sample(first, "knowledge_upsert_rows_total", action="inserted")
        assert sample(first, "pilito_run_duration_seconds_count", kind="crawl", status="success") == 1
        assert sample(first, "pilito_run_duration_seconds_count", kind="pages", status="success") >= 1
        assert sample(first, "pilito_run_duration_seconds_sum", kind="pages", status="success") > 0

        # A re-crawl of the unchanged site: pages answered 304, nothing embedded or written.
        register(database_url, "acme", demo_site)
        crawl_and_process(instance, resources)
        second = scrape(port)
        assert sample(second, "crawl_total", status="success") == 2
        assert sample(second, "crawl_pages_total", outcome="not_modified") >= 10
        assert sample(second, "crawl_pages_total", outcome="fetched") - fetched <= 2  # robots/sitemap-only changes aside
        assert sample(second, "embeddings_computed_total") == computed
        assert scrape(port) == second  # a scrape counts nothing twice
    finally:
        server.shutdown()
    # A restarted exporter reads the same history: totals, not a reset.
    restarted = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in ingestion_registry(instance).collect() for s in family.samples
    }
    assert sample(restarted, "crawl_total", status="success") == 2
    assert sample(restarted, "embeddings_computed_total") == computed

    with Retriever.from_settings(Settings(database_url=database_url)) as retriever:
        server, _ = retriever.metrics.serve(0, "127.0.0.1")
        try:
            port = server.server_port
            assert sample(scrape(port), "rag_retrieval_total", method="hybrid", primary_source="website") == 0
            result = retriever.retrieve_context("Do you offer scholarships for students?", "acme")
            after = scrape(port)
        finally:
            server.shutdown()
    method = result.to_dict()["retrieval_method"]
    assert sample(after, "rag_retrieval_total", method=method, primary_source="website") == 1
    assert sample(after, "rag_retrieval_latency_seconds_count", method=method) == 1
    assert any(name == "rag_stage_latency_seconds_count" for name, _ in after)
