"""`RetrievalResource`: the hybrid retriever as a Dagster resource, and what the chat backend calls.

The chat backend builds it once per process from the environment and calls it on every message,
without any Dagster run:

    from pilito_pipeline.defs.retrieval_resource import RetrievalResource

    rag = RetrievalResource.from_env()          # DATABASE_URL, REDIS_URL, EMBEDDING_*, RERANK_MODEL
    rag.warm_up()                               # optional: load the embedder / cross-encoder now
    result = rag.retrieve_context(
        "شهریه دوره آیلتس چقدر است؟", tenant_id="acme",
        primary_source="website", secondary_sources=["faq", "manual"],
        primary_budget=800, secondary_budget=600,
    )
    payload = result.to_dict()   # primary_context, secondary_context, context_block, total_chunks,
                                 # retrieval_method, degradations, performance{latency_ms, stages_ms}

Settings from the environment (pilito_pipeline/settings.py): DATABASE_URL (empty: the embedded
server), REDIS_URL (feature flags; empty: defaults only), EMBEDDING_PROVIDER / EMBEDDING_MODEL /
EMBEDDING_DIMENSION / OPENAI_API_KEY / OPENAI_BASE_URL (the query embedder: the same model as
indexing), RERANK_MODEL (cross-encoder name or local path; empty: no reranking unless the
`rerank_model` flag names one). Metrics: `rag.metrics.registry` is a prometheus_client registry to
expose (e.g. `prometheus_client.start_http_server(9100, registry=rag.metrics.registry)`).
`retrieve_context` raises `RetrievalUnavailable` only when the database is unreachable.
"""

from __future__ import annotations


import dagster as dg
from pydantic import PrivateAttr

from pilito_pipeline.defs.resources import env_secret, secret_value
from pilito_pipeline.retrieval import FeatureFlags, RagMetrics, RetrievalConfig, RetrievalResult, Retriever
from pilito_pipeline.settings import Settings, get_settings

_DEFAULTS = RetrievalConfig()


class RetrievalResource(dg.ConfigurableResource):
    """Thin wrapper over `pilito_pipeline.retrieval.Retriever`; the client is built on first use
    (or in `setup_for_execution` inside Dagster) and shared by every call."""

    database_url: str = ""
    """Empty: the embedded server under PILITO_DATA_DIR."""
    redis_url: str = ""
    flags_key_prefix: str = "pilito:flags:"
    embedding_provider: str = Settings.embedding_provider
    embedding_model: str = Settings.embedding_model
    embedding_dimension: int = 384
    openai_api_key: str = ""
    openai_base_url: str = ""
    embedding_service_url: str = ""
    rerank_model: str = ""
    rerank_passage: str = _DEFAULTS.rerank_passage
    rerank_max_length: int = _DEFAULTS.rerank_max_length
    dense_top_k: int = _DEFAULTS.dense_top_k
    sparse_top_k: int = _DEFAULTS.sparse_top_k
    rerank_top_k: int = _DEFAULTS.rerank_top_k
    fusion: str = _DEFAULTS.fusion
    dense_floor: float = _DEFAULTS.dense_floor
    rrf_k: int = _DEFAULTS.rrf_k
    persian_dense_weight: float = _DEFAULTS.persian_dense_weight
    dense_tldr: bool = _DEFAULTS.dense_tldr

    _retriever: Retriever | None = PrivateAttr(default=None)

    @classmethod
    def from_env(cls, settings: Settings | None = None) -> RetrievalResource:
        """Configured from the environment (`settings.py`); secrets as `dg.EnvVar`."""
        settings = settings or get_settings()
        config = RetrievalConfig.from_settings(settings)
        return cls(
            database_url=env_secret("DATABASE_URL"),
            redis_url=settings.redis_url,
            embedding_provider=settings.embedding_provider,
            embedding_model=settings.embedding_model,
            embedding_dimension=settings.embedding_dimension,
            openai_api_key=env_secret("OPENAI_API_KEY"),
            openai_base_url=settings.openai_base_url,
            embedding_service_url=settings.embedding_service_url,
            rerank_model=config.rerank_model,
            persian_dense_weight=config.persian_dense_weight,
            dense_tldr=config.dense_tldr,
        )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self.get_retriever()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._retriever is not None:
            self._retriever.close()
            self._retriever = None

    def get_retriever(self) -> Retriever:
        if self._retriever is None:
            settings = Settings(
                database_url=secret_value(self.database_url), data_dir=get_settings().data_dir, redis_url=self.redis_url,
                embedding_provider=self.embedding_provider, embedding_model=self.embedding_model,
                embedding_dimension=self.embedding_dimension, openai_api_key=secret_value(self.openai_api_key),
                openai_base_url=self.openai_base_url, embedding_service_url=self.embedding_service_url,
                rerank_model=self.rerank_model,
            )
            config = RetrievalConfig(
                dense_top_k=self.dense_top_k, sparse_top_k=self.sparse_top_k, rerank_top_k=self.rerank_top_k,
                fusion=self.fusion, dense_floor=self.dense_floor,  # type: ignore[arg-type]
                rrf_k=self.rrf_k, persian_dense_weight=self.persian_dense_weight, rerank_model=self.rerank_model,
                rerank_passage=self.rerank_passage,  # type: ignore[arg-type]
                rerank_max_length=self.rerank_max_length, dense_tldr=self.dense_tldr,
            )
            self._retriever = Retriever.from_settings(settings, config=config, flags_prefix=self.flags_key_prefix)
        return self._retriever

    @property
    def flags(self) -> FeatureFlags:
        return self.get_retriever().flags

    @property
    def metrics(self) -> RagMetrics:
        return self.get_retriever().metrics

    def warm_up(self) -> None:
        self.get_retriever().warm_up()

    def retrieve_context(
        self,
        query: str,
        tenant_id: str,
        primary_source: str = "website",
        secondary_sources: list[str] | tuple[str, ...] = (),
        primary_budget: int = 800,
        secondary_budget: int = 600,
    ) -> RetrievalResult:
        """See `Retriever.retrieve_context`."""
        return self.get_retriever().retrieve_context(
            query, tenant_id, primary_source, secondary_sources, primary_budget, secondary_budget
        )
