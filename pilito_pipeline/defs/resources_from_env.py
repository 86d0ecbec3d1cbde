"""Resource instances configured from the environment (settings.py), secrets through `dg.EnvVar`."""

from __future__ import annotations

from typing import Any


from pilito_pipeline.defs.io_managers import run_values_io_manager
from pilito_pipeline.defs.resources import CrawlerResource, DatabaseResource, EmbeddingResource, env_secret
from pilito_pipeline.defs.retrieval_resource import RetrievalResource
from pilito_pipeline.settings import Settings, get_settings


def resources_from_settings(settings: Settings | None = None) -> dict[str, Any]:
    settings = settings or get_settings()
    database = DatabaseResource(
        database_url=env_secret("DATABASE_URL"), embedding_dimension=settings.embedding_dimension
    )
    return {
        "database": database,
        "crawler": CrawlerResource(
            user_agent=settings.crawl_user_agent,
            rate_limit_seconds=settings.crawl_rate_limit_seconds,
            allowed_hosts=list(settings.crawl_allowed_hosts),
            retire_unseen_crawls=settings.crawl_retire_unseen_crawls,
            retire_unseen_days=settings.crawl_retire_unseen_days,
        ),
        "embedder": EmbeddingResource.from_settings(settings),
        "retrieval": RetrievalResource.from_env(settings),
        "page_values_io_manager": run_values_io_manager,
    }
