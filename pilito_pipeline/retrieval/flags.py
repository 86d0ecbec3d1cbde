"""Feature flags in Redis, with a TTL per flag, percentage rollout and defaults when Redis is away.

Flags (values are JSON in Redis under `<prefix><name>`):

- `production_rag` (bool, unset by default): the kill switch. `false` sends every tenant to the
  legacy path (dense-only vector search, no BM25, no rerank: what the chat backend had before);
  `true` gives every tenant the full pipeline; unset defers to the rollout percentage.
- `production_rag_rollout_percentage` (0-100, default 100): share of tenants on the full pipeline,
  chosen by a stable SHA-256 bucket of the tenant id (the same tenant always lands in the same
  bucket, on every process and after restarts; Python's `hash()` is salted per process).
- `cross_encoder_reranking` (bool; default: on when a rerank model is configured).
- `rerank_model` (str: name, local path, or the seeds' aliases `base`/`large`).
- `rerank_top_k`, `dense_top_k`, `sparse_top_k` (int, 1-200).

Reads are cached in-process for `cache_seconds` (one MGET per refresh), so the chat backend does
not pay a Redis round trip per message. When Redis is unreachable every flag takes its default,
the outage is logged once, and Redis is asked again after `cache_seconds`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

log = logging.getLogger(__name__)

RERANK_MODEL_ALIASES = {"base": "BAAI/bge-reranker-base", "large": "BAAI/bge-reranker-large"}


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"expected true or false, got {value!r}")


def _int_between(low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"expected an integer in [{low}, {high}], got {value!r}")
        return value

    return check


def _model_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a model name or path, got {value!r}")
    return value.strip()


FLAG_TYPES: dict[str, Callable[[Any], Any]] = {
    "production_rag": _bool,
    "production_rag_rollout_percentage": _int_between(0, 100),
    "cross_encoder_reranking": _bool,
    "rerank_model": _model_name,
    "rerank_top_k": _int_between(1, 200),
    "dense_top_k": _int_between(1, 200),
    "sparse_top_k": _int_between(1, 200),
}
DEFAULTS: dict[str, Any] = {"production_rag_rollout_percentage": 100}
"""Flags absent here default to None: 'not set, use the configuration'."""


def rollout_bucket(flag: str, tenant_id: str) -> int:
    """The tenant's stable bucket 0-99 for `flag` (independent buckets per flag)."""
    digest = hashlib.sha256(f"{flag}\x1f{tenant_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


class FeatureFlags:
    """Flag reads and writes; `redis_url` empty means defaults only (and writes are refused)."""

    def __init__(self, redis_url: str = "", *, key_prefix: str = "pilito:flags:", cache_seconds: float = 5.0,
                 timeout_seconds: float = 0.2) -> None:
        self.key_prefix = key_prefix
        self.cache_seconds = cache_seconds
        self._client = (
            redis.Redis.from_url(redis_url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds)
            if redis_url else None
        )
        self._lock = threading.Lock()
        self._cached: dict[str, Any] = {}
        self._cached_at = float("-inf")
        self._outage_logged = False

    @property
    def backed_by_redis(self) -> bool:
        return self._client is not None

    def set_flag(self, name: str, value: Any, ttl: int | None = None) -> None:
        """Store a flag (validated), expiring after `ttl` seconds when given."""
        value = self._validate(name, value)
        if self._client is None:
            raise RuntimeError("feature flags need REDIS_URL to be changed at run time")
        if ttl is not None and ttl < 1:
            raise ValueError(f"ttl must be at least 1 second, got {ttl}")
        self._client.set(self.key_prefix + name, json.dumps(value), ex=ttl)
        self.invalidate()

    def clear_flag(self, name: str) -> None:
        self._validate_name(name)
        if self._client is None:
            raise RuntimeError("feature flags need REDIS_URL to be changed at run time")
        self._client.delete(self.key_prefix + name)
        self.invalidate()

    def invalidate(self) -> None:
        """Forget the in-process cache (the next read asks Redis)."""
        with self._lock:
            self._cached_at = float("-inf")

    def get_value(self, name: str) -> Any:
        self._validate_name(name)
        return self.get_all_flags()[name]

    def get_all_flags(self) -> dict[str, Any]:
        """Every flag's effective value (stored, else default), at most `cache_seconds` old."""
        with self._lock:
            if time.monotonic() - self._cached_at >= self.cache_seconds:
                self._cached = self._read_all()
                self._cached_at = time.monotonic()
            return dict(self._cached)

    def production_rag_enabled(self, tenant_id: str) -> bool:
        """Whether `tenant_id` gets the full pipeline (see the module docstring)."""
        flags = self.get_all_flags()
        if flags["production_rag"] is not None:
            return bool(flags["production_rag"])
        percentage = flags["production_rag_rollout_percentage"]
        return rollout_bucket("production_rag", tenant_id) < percentage

    def _read_all(self) -> dict[str, Any]:
        values = {name: DEFAULTS.get(name) for name in FLAG_TYPES}
        if self._client is None:
            return values
        names = list(FLAG_TYPES)
        try:
            raw_values = self._client.mget([self.key_prefix + name for name in names])
        except redis.RedisError as exc:
            if not self._outage_logged:
                log.warning("feature flags: Redis unreachable (%s); using defaults until it answers",
                            type(exc).__name__)
                self._outage_logged = True
            return values
        self._outage_logged = False
        for name, raw in zip(names, raw_values, strict=True):
            if raw is None:
                continue
            try:
                values[name] = self._validate(name, json.loads(raw))
            except (ValueError, TypeError) as exc:
                log.warning("feature flag %s has an invalid stored value (%s); using its default", name, exc)
        return values

    @staticmethod
    def _validate_name(name: str) -> None:
        if name not in FLAG_TYPES:
            raise KeyError(f"unknown feature flag {name!r}; known: {', '.join(FLAG_TYPES)}")

    @classmethod
    def _validate(cls, name: str, value: Any) -> Any:
        cls._validate_name(name)
        try:
            return FLAG_TYPES[name](value)
        except ValueError as exc:
            raise ValueError(f"feature flag {name}: {exc}") from None
