"""Feature flags on the real Redis: values, TTL, validation, rollout determinism, Redis down."""

from __future__ import annotations

import hashlib
import logging

import pytest
import redis

from pilito_pipeline.retrieval.flags import DEFAULTS, FLAG_TYPES, FeatureFlags, rollout_bucket


@pytest.fixture
def flags(redis_url: str, redis_prefix: str) -> FeatureFlags:
    return FeatureFlags(redis_url, key_prefix=redis_prefix, cache_seconds=0)


def test_defaults_then_stored_values(flags: FeatureFlags) -> None:
    assert flags.get_all_flags() == {name: DEFAULTS.get(name) for name in FLAG_TYPES}
    flags.set_flag("dense_top_k", 15)
    flags.set_flag("rerank_model", "base")
    flags.set_flag("cross_encoder_reranking", False)
    assert flags.get_value("dense_top_k") == 15
    assert flags.get_value("rerank_model") == "base"
    assert flags.get_value("cross_encoder_reranking") is False
    flags.clear_flag("dense_top_k")
    assert flags.get_value("dense_top_k") is None


def test_ttl_is_set_in_redis(flags: FeatureFlags, redis_url: str, redis_prefix: str) -> None:
    flags.set_flag("production_rag_rollout_percentage", 10, ttl=3600)
    ttl = redis.Redis.from_url(redis_url).ttl(redis_prefix + "production_rag_rollout_percentage")
    assert 3590 <= ttl <= 3600


@pytest.mark.parametrize(("name", "value"), [
    ("production_rag", "yes"), ("production_rag_rollout_percentage", 101), ("rerank_top_k", 0),
    ("dense_top_k", True), ("rerank_model", ""),
])
def test_invalid_values_are_refused(flags: FeatureFlags, name: str, value: object) -> None:
    with pytest.raises(ValueError, match=name):
        flags.set_flag(name, value)


def test_unknown_flag_and_garbage_in_redis(flags: FeatureFlags, redis_url: str, redis_prefix: str) -> None:
    with pytest.raises(KeyError):
        flags.get_value("no_such_flag")
    redis.Redis.from_url(redis_url).set(redis_prefix + "rerank_top_k", "not json")
    assert flags.get_value("rerank_top_k") is None


def test_rollout_bucket_is_a_stable_sha256_bucket() -> None:
    expected = int.from_bytes(hashlib.sha256(b"production_rag\x1facme").digest()[:8], "big") % 100
    assert rollout_bucket("production_rag", "acme") == expected
    buckets = [rollout_bucket("production_rag", f"tenant-{i}") for i in range(2000)]
    assert all(0 <= b < 100 for b in buckets)
    assert 0.4 < sum(b < 50 for b in buckets) / len(buckets) < 0.6  # roughly uniform


def test_percentage_rollout_is_deterministic_and_monotone(redis_url: str, redis_prefix: str) -> None:
    tenants = [f"tenant-{i}" for i in range(300)]
    writer = FeatureFlags(redis_url, key_prefix=redis_prefix, cache_seconds=0)
    enabled: dict[int, set[str]] = {}
    for percentage in (0, 10, 50, 100):
        writer.set_flag("production_rag_rollout_percentage", percentage)
        # A separate instance (another process, in effect) sees the same tenants enabled.
        reader = FeatureFlags(redis_url, key_prefix=redis_prefix, cache_seconds=0)
        enabled[percentage] = {t for t in tenants if reader.production_rag_enabled(t)}
        assert enabled[percentage] == {t for t in tenants if writer.production_rag_enabled(t)}
    assert enabled[0] == set() and enabled[100] == set(tenants)
    assert enabled[10] <= enabled[50]
    assert 0.03 < len(enabled[10]) / len(tenants) < 0.2


def test_kill_switch_overrides_percentage(flags: FeatureFlags) -> None:
    flags.set_flag("production_rag_rollout_percentage", 100)
    flags.set_flag("production_rag", False)
    assert not flags.production_rag_enabled("acme")
    flags.set_flag("production_rag", True)
    flags.set_flag("production_rag_rollout_percentage", 0)
    assert flags.production_rag_enabled("acme")


def test_cache_serves_reads_until_it_expires(redis_url: str, redis_prefix: str) -> None:
    cached = FeatureFlags(redis_url, key_prefix=redis_prefix, cache_seconds=3600)
    assert cached.get_value("rerank_top_k") is None
    FeatureFlags(redis_url, key_prefix=redis_prefix).set_flag("rerank_top_k", 3)
    assert cached.get_value("rerank_top_k") is None
    cached.invalidate()
    assert cached.get_value("rerank_top_k") == 3


def test_redis_down_gives_defaults_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    down = FeatureFlags("redis://127.0.0.1:1/0", cache_seconds=0, timeout_seconds=0.05)
    with caplog.at_level(logging.WARNING, logger="pilito_pipeline.retrieval.flags"):
        for _ in range(3):
            assert down.get_all_flags() == {name: DEFAULTS.get(name) for name in FLAG_TYPES}
            assert down.production_rag_enabled("acme")
    assert len([r for r in caplog.records if "Redis unreachable" in r.message]) == 1
    with pytest.raises(redis.RedisError):
        down.set_flag("production_rag", False)


def test_without_redis_flags_are_read_only_defaults() -> None:
    plain = FeatureFlags("")
    assert not plain.backed_by_redis and plain.production_rag_enabled("acme")
    with pytest.raises(RuntimeError, match="REDIS_URL"):
        plain.set_flag("production_rag", False)
