"""Prometheus metrics of retrieval, on a registry of their own (expose it, or inspect it in tests).

Labels are bounded: retrieval method, chunk type, stage, error type, model (configured names only),
query complexity/language. Never a tenant id or a query.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.4, 0.6, 1.0, 2.0, 5.0)
CHUNK_BUCKETS = (0, 1, 2, 3, 5, 8, 12, 20, 40)


class RagMetrics:
    """The seeds' metric names; `registry` is new per instance unless one is given."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.retrieval_total = Counter(
            "rag_retrieval_total", "Retrievals served", ["method", "primary_source"], registry=r)
        self.retrieval_latency = Histogram(
            "rag_retrieval_latency_seconds", "End-to-end retrieval latency", ["method"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.stage_latency = Histogram(
            "rag_stage_latency_seconds", "Latency of one retrieval stage", ["stage"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.chunks_retrieved = Histogram(
            "rag_chunks_retrieved", "Chunks returned per retrieval and group", ["method", "source"],
            buckets=CHUNK_BUCKETS, registry=r)
        self.reranking_total = Counter(
            "rag_reranking_total", "Cross-encoder reranking calls", ["model", "outcome"], registry=r)
        self.reranking_latency = Histogram(
            "rag_reranking_latency_seconds", "Cross-encoder reranking latency", ["model"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.errors_total = Counter(
            "rag_errors_total", "Stage failures (degraded, or fatal for 'database')",
            ["method", "error_type"], registry=r)
        self.query_complexity = Counter(
            "rag_query_complexity", "Queries by analysed complexity and language",
            ["complexity", "language"], registry=r)
        self.chunk_scores = Histogram(
            "rag_chunk_scores", "Scores of returned chunks by the stage that ranked them", ["source"],
            buckets=(-10, -5, -2, -1, 0, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 2, 5, 10, 20),
            registry=r)

    def serve(self, port: int, host: str = "0.0.0.0"):
        """Expose this registry at `http://host:port/metrics` from a background thread (the chat
        backend: `RetrievalResource.from_env().metrics.serve(9100)`); returns (server, thread)."""
        return start_http_server(port, addr=host, registry=self.registry)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """A sample's current value (0.0 when never observed): `value("rag_errors_total", {...})`."""
        return self.registry.get_sample_value(name, labels or {}) or 0.0
