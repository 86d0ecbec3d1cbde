"""One circuit breaker per embedding provider, its state shared by every worker through Redis.

With `redis_url` set, pybreaker keeps the state, failure counter and opening time in Redis, so
when one process trips the breaker every other process fails fast too, and they half-open
together after `reset_timeout` seconds. Without Redis the state lives in this process only
(logged once). A Redis outage never blocks embedding: pybreaker then treats the circuit as closed.
"""

from __future__ import annotations

import logging
from functools import cache

import pybreaker
import redis

from pilito_pipeline.embed.errors import EmbeddingRequestError

log = logging.getLogger(__name__)

DEFAULT_FAIL_MAX = 5
DEFAULT_RESET_TIMEOUT_SECONDS = 60.0
REDIS_TIMEOUT_SECONDS = 2.0


def provider_breaker(
    name: str,
    redis_url: str = "",
    *,
    key_prefix: str = "pilito:",
    fail_max: int = DEFAULT_FAIL_MAX,
    reset_timeout: float = DEFAULT_RESET_TIMEOUT_SECONDS,
) -> pybreaker.CircuitBreaker:
    """A breaker named `name`; its Redis keys start with `{key_prefix}breaker:{name}:`.

    Requests the provider refused (`EmbeddingRequestError`) do not count as failures: a bad input
    says nothing about the provider's health.
    """
    return pybreaker.CircuitBreaker(
        fail_max=fail_max,
        reset_timeout=reset_timeout,
        exclude=[EmbeddingRequestError],
        state_storage=_storage(f"{key_prefix}breaker:{name}", redis_url),
        name=name,
    )


def _storage(namespace: str, redis_url: str) -> pybreaker.CircuitBreakerStorage:
    if not redis_url:
        _log_in_process_state_once()
        return pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)
    # pybreaker decodes the bytes itself: the client must not decode responses.
    client = redis.Redis.from_url(
        redis_url,
        decode_responses=False,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
    )
    try:
        return pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, client, namespace=namespace)
    except redis.RedisError as exc:
        log.warning(
            "Redis at %s is unreachable (%s); the embedding circuit breaker keeps its state in this process",
            _without_password(redis_url),
            type(exc).__name__,
        )
        return pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)


@cache
def _log_in_process_state_once() -> None:
    log.info("REDIS_URL is not set: each process keeps its own embedding circuit-breaker state")


def _without_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    return f"{scheme}{sep}{'***' + at if at else ''}{host}" if sep else "(redis url)"
