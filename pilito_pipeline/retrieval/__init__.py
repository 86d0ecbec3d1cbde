"""Hybrid retrieval for the chat backend: query analysis, dense + BM25, RRF, rerank, packing,
feature flags, metrics and the evaluation harness. See `retriever` for the pipeline."""

from pilito_pipeline.retrieval.config import RetrievalConfig
from pilito_pipeline.retrieval.flags import FeatureFlags
from pilito_pipeline.retrieval.metrics import RagMetrics
from pilito_pipeline.retrieval.packing import RetrievedChunk, TokenCounter
from pilito_pipeline.retrieval.rerank import CrossEncoderReranker, RerankUnavailable
from pilito_pipeline.retrieval.retriever import Degradation, RetrievalResult, RetrievalUnavailable, Retriever

__all__ = [
    "CrossEncoderReranker",
    "Degradation",
    "FeatureFlags",
    "RagMetrics",
    "RerankUnavailable",
    "RetrievalConfig",
    "RetrievalResult",
    "RetrievalUnavailable",
    "RetrievedChunk",
    "Retriever",
    "TokenCounter",
]
