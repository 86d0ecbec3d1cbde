"""Resources shared by assets, sensors and checks: the database, the crawler's settings, the embedder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import dagster as dg
import psycopg
from pydantic import PrivateAttr

from pilito_pipeline.crawl import CrawlConfig
from pilito_pipeline.embed import E5Provider, EmbeddingProvider, build_provider, configured_model_name
from pilito_pipeline.settings import Settings, get_settings
from pilito_pipeline.store.ann_indexes import DEFAULT_MIN_CHUNKS
from pilito_pipeline.store.db import connect, resolve_database_url
from pilito_pipeline.store.migrate import migrate
from pilito_pipeline.store.retirement import RetirementPolicy
from pilito_pipeline.store.websites import Website


def env_secret(name: str) -> Any:
    """An `EnvVar` when the variable is set (Dagster resolves it at resource init and never logs
    it), else empty."""
    return dg.EnvVar(name) if os.environ.get(name) else ""


def secret_value(value: Any) -> str:
    """The value of a field made by `env_secret`, read outside Dagster (which resolves `EnvVar`
    fields only when it initialises the resource)."""
    return (value.get_value() or "") if isinstance(value, dg.EnvVar) else value


@cache
def _migrated_url(database_url: str, embedding_dimension: int) -> str:
    """Resolve the URL (starting the embedded server if needed) and migrate once per process."""
    url = resolve_database_url(Settings(database_url=database_url, data_dir=get_settings().data_dir))
    migrate(url, embedding_dimension=embedding_dimension)
    return url


class DatabaseResource(dg.ConfigurableResource):
    """The pipeline's PostgreSQL + pgvector. An empty URL means the embedded server."""

    database_url: str = ""
    embedding_dimension: int = 384
    ann_index_min_chunks: int = DEFAULT_MIN_CHUNKS
    """Searchable chunks from which a tenant gets its own HNSW indexes; below, exact search."""

    @property
    def url(self) -> str:
        return _migrated_url(self.database_url, self.embedding_dimension)

    @contextmanager
    def connect(self, *, autocommit: bool = False) -> Iterator[psycopg.Connection]:
        """A connection that commits when the block succeeds and rolls back otherwise (with
        `autocommit`, each statement is its own transaction and `conn.transaction()` opens one)."""
        with connect(self.url, autocommit=autocommit) as conn:
            yield conn


class CrawlerResource(dg.ConfigurableResource):
    """Crawl settings shared by every website; per-website limits come from the websites table."""

    user_agent: str = CrawlConfig.user_agent
    rate_limit_seconds: float = 0.5
    max_concurrency: int = 4
    allowed_hosts: list[str] = []
    retire_unseen_crawls: int = RetirementPolicy.unseen_crawls
    """A page of a site never crawled completely is retired once this many crawls in a row missed it..."""
    retire_unseen_days: float = RetirementPolicy.unseen_days
    """...over at least this many days (and within the mass-deletion guard; store/retirement.py)."""

    def retirement_policy(self) -> RetirementPolicy:
        return RetirementPolicy(unseen_crawls=self.retire_unseen_crawls, unseen_days=self.retire_unseen_days)

    def config_for(self, website: Website) -> CrawlConfig:
        return CrawlConfig(
            max_pages=website.max_pages,
            max_depth=website.max_depth,
            include_patterns=website.include_patterns,
            exclude_patterns=website.exclude_patterns,
            include_subdomains=website.include_subdomains,
            rate_limit_seconds=self.rate_limit_seconds,
            max_concurrency=self.max_concurrency,
            user_agent=self.user_agent,
            allowed_hosts=tuple(self.allowed_hosts),
        )


class EmbeddingResource(dg.ConfigurableResource):
    """The embedding provider: a local model (in process, or in the embedding service), or OpenAI;
    the remote ones behind a circuit breaker shared through Redis.

    The provider (a model load, for the local one) is built on first use, so sensors and checks
    that only need the model's name never load it.
    """

    provider: str = Settings.embedding_provider
    model: str = Settings.embedding_model
    dimension: int = 384
    batch_size: int = 64
    openai_api_key: str = ""
    openai_base_url: str = ""
    service_url: str = ""
    """The embedding service (EMBEDDING_SERVICE_URL) that embeds for a local model; empty: in process."""
    redis_url: str = ""
    embed_tldr: bool = False
    """Also embed chunks' TL;DRs (settings.embed_tldr)."""
    languages: list[str] = []
    """EMBEDDING_LANGUAGES; empty: decided by the model (settings.Settings)."""

    _provider: EmbeddingProvider | None = PrivateAttr(default=None)

    @classmethod
    def from_settings(cls, settings: Settings) -> "EmbeddingResource":
        """Configured from the environment; the OpenAI key as a `dg.EnvVar`."""
        return cls(
            provider=settings.embedding_provider,
            model=settings.embedding_model,
            dimension=settings.embedding_dimension,
            batch_size=settings.embedding_batch_size,
            openai_api_key=env_secret("OPENAI_API_KEY"),
            openai_base_url=settings.openai_base_url,
            service_url=settings.embedding_service_url,
            redis_url=settings.redis_url,
            embed_tldr=settings.embed_tldr,
            languages=list(settings.embedding_languages),
        )

    def to_settings(self) -> Settings:
        return Settings(
            embedding_provider=self.provider,
            embedding_model=self.model,
            embedding_dimension=self.dimension,
            embedding_batch_size=self.batch_size,
            openai_api_key=self.openai_api_key,
            openai_base_url=self.openai_base_url,
            embedding_service_url=self.service_url,
            redis_url=self.redis_url,
            embed_tldr=self.embed_tldr,
            embedding_languages=tuple(self.languages),
        )

    @property
    def model_name(self) -> str:
        """The name stored with every embedding, known without loading the model."""
        return configured_model_name(self.to_settings())

    def get_provider(self) -> EmbeddingProvider:
        if self._provider is None:
            self._provider = build_provider(self.to_settings())
        return self._provider

    def start_loading(self) -> None:
        """Begin loading the local e5 model in the background (other providers load nothing, or
        load on first use)."""
        provider = self.get_provider()
        if isinstance(provider, E5Provider):
            provider.load_in_background()
