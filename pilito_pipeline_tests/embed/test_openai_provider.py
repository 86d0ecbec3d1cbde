from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from pilito_pipeline.embed import EmbeddingRequestError, OpenAIProvider, ProviderUnavailable
from pilito_pipeline.embed.openai_provider import request_batches
from pilito_pipeline_tests.embed.openai_server import EmbeddingServer, Failure, expected_vector

API_KEY = "sk-test-secret-0123456789"


def provider(server: EmbeddingServer, **options: object) -> OpenAIProvider:
    # The timeout only bounds a failing test (a loaded machine answers slowly, not wrongly).
    settings = {"api_key": API_KEY, "base_url": server.url, "timeout_seconds": 60.0, "max_retries": 2} | options
    return OpenAIProvider("text-embedding-3-small", 16, **settings)  # type: ignore[arg-type]


def test_batches_inputs_keeps_order_and_normalises(embedding_server: EmbeddingServer) -> None:
    texts = [f"متن شماره {i}" for i in range(7)]
    vectors = provider(embedding_server, max_inputs_per_request=3).embed(texts)

    assert embedding_server.inputs_per_request == [3, 3, 1]
    assert all(r["dimensions"] == 16 and r["model"] == "text-embedding-3-small" for r in embedding_server.requests)
    assert vectors.shape == (7, 16) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, np.stack([expected_vector(t, 16) for t in texts]), atol=1e-6)
    assert embedding_server.authorizations[0] == f"Bearer {API_KEY}"


def test_request_batches_respect_input_and_token_caps() -> None:
    texts = ["a" * 40, "b" * 40, "c" * 40, "د" * 30, "e"]  # "د" is two UTF-8 bytes
    assert list(request_batches(texts, max_inputs=10, max_tokens=100)) == [(0, 2), (2, 4), (4, 5)]
    assert list(request_batches(texts, max_inputs=2, max_tokens=10_000)) == [(0, 2), (2, 4), (4, 5)]
    assert list(request_batches(["x" * 500], max_tokens=100)) == [(0, 1)]  # one text is never split
    assert list(request_batches([])) == []


def test_429_is_retried_after_the_servers_retry_after(embedding_server: EmbeddingServer) -> None:
    embedding_server.fail_next(Failure(429, {"Retry-After": "1"}, "rate limited"))
    started = time.monotonic()
    vectors = provider(embedding_server).embed(["hello"])
    assert time.monotonic() - started >= 0.9
    assert len(embedding_server.authorizations) == 2 and len(embedding_server.requests) == 1
    np.testing.assert_allclose(vectors[0], expected_vector("hello", 16), atol=1e-6)


def test_persistent_5xx_and_429_become_provider_unavailable(embedding_server: EmbeddingServer) -> None:
    embedding_server.always_fail = Failure(503, {"Retry-After-Ms": "10"})
    with pytest.raises(ProviderUnavailable, match="HTTP 503"):
        provider(embedding_server, max_retries=2).embed(["x"])
    assert len(embedding_server.authorizations) == 3  # first try + 2 retries

    embedding_server.always_fail = Failure(429, {"Retry-After-Ms": "10"})
    with pytest.raises(ProviderUnavailable, match="HTTP 429"):
        provider(embedding_server, max_retries=1).embed(["x"])


def test_timeouts_and_refused_connections_are_provider_unavailable(embedding_server: EmbeddingServer) -> None:
    # The answer comes a minute after the client's 0.2 s timeout: no scheduling delay can beat that.
    embedding_server.fail_next(Failure(200, delay_seconds=60.0))
    with pytest.raises(ProviderUnavailable, match="timed out"):
        provider(embedding_server, timeout_seconds=0.2, max_retries=0).embed(["slow"])
    with pytest.raises(ProviderUnavailable, match="could not connect"):
        OpenAIProvider("m", 16, api_key=API_KEY, base_url="http://127.0.0.1:9/v1", max_retries=0).embed(["x"])


def test_refusals_are_request_errors_without_the_key(
    embedding_server: EmbeddingServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    embedding_server.fail_next(Failure(401, message=f"Incorrect API key provided: {API_KEY}"))
    with pytest.raises(EmbeddingRequestError, match="refused the API key") as refused:
        provider(embedding_server).embed(["x"])
    assert API_KEY not in str(refused.value)

    embedding_server.fail_next(Failure(400, message="input too long"))
    with pytest.raises(EmbeddingRequestError, match="HTTP 400: .*input too long"):
        provider(embedding_server).embed(["x"])
    assert len(embedding_server.authorizations) == 2  # neither was retried
    assert API_KEY not in caplog.text


def test_wrong_dimension_and_empty_text_are_request_errors(embedding_server: EmbeddingServer) -> None:
    embedding_server.dimension_override = 32
    with pytest.raises(EmbeddingRequestError, match="32-dimensional vectors, expected 16"):
        provider(embedding_server).embed(["x"])
    with pytest.raises(EmbeddingRequestError, match="text 1 is empty"):
        provider(embedding_server).embed(["x", "  "])


def test_missing_key_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        OpenAIProvider("text-embedding-3-small", 16, api_key="")
