"""Embedding providers (local sentence-transformers, OpenAI), run-wide batching, the circuit breaker."""

from pilito_pipeline.embed.batch import EmbedCounts, embed_rows
from pilito_pipeline.embed.breaker import provider_breaker
from pilito_pipeline.embed.errors import EmbeddingError, EmbeddingRequestError, ProviderUnavailable
from pilito_pipeline.embed.factory import build_provider, check_provider_matches_store, configured_model_name
from pilito_pipeline.embed.local import LocalProvider
from pilito_pipeline.embed.openai_provider import OpenAIProvider
from pilito_pipeline.embed.provider import EmbeddingProvider

__all__ = [
    "EmbedCounts",
    "EmbeddingError",
    "EmbeddingProvider",
    "EmbeddingRequestError",
    "LocalProvider",
    "OpenAIProvider",
    "ProviderUnavailable",
    "build_provider",
    "check_provider_matches_store",
    "configured_model_name",
    "embed_rows",
    "provider_breaker",
]
