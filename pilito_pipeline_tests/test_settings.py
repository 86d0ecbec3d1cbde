"""Settings that do not parse stop the start with the variable's name, not a bare ValueError."""

from __future__ import annotations

import pytest

from pilito_pipeline.settings import settings_from_env


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
