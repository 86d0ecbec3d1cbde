"""The circuit breaker's state is shared through the real Redis by separate processes.

No test here waits for the reset timeout: it is an hour, so a slow process start cannot let the
breaker half-open by itself, and the test moves the opening time back in Redis (as an hour passing
would) to reach the half-open trial."""

from __future__ import annotations

import logging
import multiprocessing
from datetime import UTC, datetime, timedelta

import pybreaker
import pytest
import redis

from pilito_pipeline.embed import OpenAIProvider, ProviderUnavailable, provider_breaker
from pilito_pipeline.embed.breaker import _log_in_process_state_once
from pilito_pipeline_tests.embed.openai_server import EmbeddingServer, Failure

FAIL_MAX = 3
RESET_TIMEOUT = 3600.0  # never reached while a test runs; see opened_long_ago()


def guarded_provider(server_url: str, redis_url: str, prefix: str) -> OpenAIProvider:
    breaker = provider_breaker(
        "openai:test", redis_url, key_prefix=prefix, fail_max=FAIL_MAX, reset_timeout=RESET_TIMEOUT
    )
    return OpenAIProvider("text-embedding-3-small", 8, api_key="k", base_url=server_url, max_retries=0, breaker=breaker)


def embed_in_other_process(server_url: str, redis_url: str, prefix: str, queue: multiprocessing.Queue) -> None:
    provider = guarded_provider(server_url, redis_url, prefix)
    try:
        provider.embed(["from the other process"])
        queue.put("ok")
    except ProviderUnavailable as exc:
        queue.put(f"unavailable: {exc}")


def opened_long_ago(redis_url: str, prefix: str) -> None:
    """Move the breaker's opening time in Redis back past the reset timeout, as time passing would.

    (pybreaker's own setter only moves it forward, so the key is written directly.)"""
    storage = provider_breaker("openai:test", redis_url, key_prefix=prefix)._state_storage
    assert isinstance(storage, pybreaker.CircuitRedisStorage)
    key = storage._namespace("opened_at")
    client = redis.Redis.from_url(redis_url)
    assert client.exists(key)
    past = datetime.now(UTC) - timedelta(seconds=RESET_TIMEOUT + 60)
    client.set(key, int(past.timestamp()))


def run_in_other_process(server_url: str, redis_url: str, prefix: str) -> str:
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing shared but Redis
    queue = context.Queue()
    process = context.Process(target=embed_in_other_process, args=(server_url, redis_url, prefix, queue))
    process.start()
    result = queue.get(timeout=300)  # generous: a spawned interpreter on a loaded machine
    process.join(timeout=300)
    return result


@pytest.mark.slow
def test_a_breaker_opened_in_one_process_is_open_in_another(
    embedding_server: EmbeddingServer, redis_url: str, redis_prefix: str
) -> None:
    provider = guarded_provider(embedding_server.url, redis_url, redis_prefix)
    embedding_server.always_fail = Failure(500)
    for _ in range(FAIL_MAX - 1):
        with pytest.raises(ProviderUnavailable, match="HTTP 500"):
            provider.embed(["x"])
    with pytest.raises(ProviderUnavailable, match="circuit breaker open"):
        provider.embed(["x"])
    calls_when_opened = len(embedding_server.authorizations)
    assert calls_when_opened == FAIL_MAX

    embedding_server.always_fail = None  # the provider recovers, but the breaker is still open
    assert provider_breaker("openai:test", redis_url, key_prefix=redis_prefix).current_state == pybreaker.STATE_OPEN
    assert run_in_other_process(embedding_server.url, redis_url, redis_prefix).startswith("unavailable")
    assert len(embedding_server.authorizations) == calls_when_opened  # failed fast, no request

    opened_long_ago(redis_url, redis_prefix)
    assert run_in_other_process(embedding_server.url, redis_url, redis_prefix) == "ok"  # half-open trial
    assert provider_breaker("openai:test", redis_url, key_prefix=redis_prefix).current_state == pybreaker.STATE_CLOSED
    assert provider.embed(["x"]).shape == (1, 8)


def test_refused_requests_do_not_trip_the_breaker(
    embedding_server: EmbeddingServer, redis_url: str, redis_prefix: str
) -> None:
    provider = guarded_provider(embedding_server.url, redis_url, redis_prefix)
    embedding_server.always_fail = Failure(400, message="bad input")
    for _ in range(FAIL_MAX + 1):
        with pytest.raises(Exception, match="bad input"):
            provider.embed(["x"])
    assert provider_breaker("openai:test", redis_url, key_prefix=redis_prefix).current_state == pybreaker.STATE_CLOSED


def test_without_redis_the_state_is_per_process_and_said_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pilito_pipeline.embed.breaker")
    _log_in_process_state_once.cache_clear()  # as in a fresh process
    first = provider_breaker("openai:a")
    second = provider_breaker("openai:b")
    assert isinstance(first._state_storage, pybreaker.CircuitMemoryStorage)
    assert isinstance(second._state_storage, pybreaker.CircuitMemoryStorage)
    assert caplog.text.count("REDIS_URL is not set") == 1  # said once per process, not per breaker
