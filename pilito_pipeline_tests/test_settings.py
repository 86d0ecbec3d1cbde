"""Settings from the environment: an empty variable means the setting's default, as an unset one
does (docker-compose passes every setting to every container, empty where the shell has none), and
a setting that does not parse stops the start with the variable's name, not a bare ValueError."""

from __future__ import annotations

import pytest

from pilito_pipeline.settings import settings_from_env

SETTINGS = ("EMBEDDING_PROVIDER", "EMBEDDING_MODEL", "EMBEDDING_DIMENSION", "EMBEDDING_BATCH_SIZE",
            "EMBED_TLDR", "CRAWL_USER_AGENT", "CRAWL_MAX_PAGES", "CRAWL_RATE_LIMIT_SECONDS",
            "CRAWL_ALLOWED_HOSTS", "RERANK_MODEL")


def test_an_empty_setting_means_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    defaults = settings_from_env()
    for name in SETTINGS:
        monkeypatch.setenv(name, " ")
    assert settings_from_env() == defaults
    assert defaults.embedding_provider == "local" and defaults.crawl_user_agent


def test_a_set_value_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDDING_PROVIDER", " openai ")
    monkeypatch.setenv("CRAWL_USER_AGENT", "acme-bot/1.0")
    settings = settings_from_env()
    assert (settings.embedding_provider, settings.crawl_user_agent) == ("openai", "acme-bot/1.0")


@pytest.mark.parametrize(("name", "value", "message"), [
    ("CRAWL_MAX_PAGES", "many", "setting CRAWL_MAX_PAGES must be an integer, got 'many'"),
    ("CRAWL_RATE_LIMIT_SECONDS", "fast", "setting CRAWL_RATE_LIMIT_SECONDS must be a number, got 'fast'"),
])
def test_a_setting_that_does_not_parse_is_named(monkeypatch: pytest.MonkeyPatch, name: str, value: str,
                                                message: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        settings_from_env()


def test_an_empty_number_setting_is_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRAWL_MAX_PAGES", " ")
    monkeypatch.setenv("CRAWL_RATE_LIMIT_SECONDS", "")
    settings = settings_from_env()
    assert settings.crawl_max_pages == 200 and settings.crawl_rate_limit_seconds == 0.5
