"""Evaluation harness: MRR, nDCG@10 and recall@k of dense-only, BM25-only, hybrid and hybrid+rerank.

Queries are JSONL lines `{"id": ..., "query": ..., "relevant": ["/url/path.html", ...]}`; relevance
is by page (URL path), so a method's chunk ranking is turned into a page ranking (first occurrence
of each page). Every method runs the production stage code (same SQL, plan choice, RRF and rerank
passages as `Retriever`) on an already ingested tenant. Gains are binary.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from pilito_pipeline.embed import EmbeddingProvider, build_provider
from pilito_pipeline.retrieval.bm25 import bm25_search
from pilito_pipeline.retrieval.chunks import fetch_chunks
from pilito_pipeline.retrieval.config import RetrievalConfig
from pilito_pipeline.retrieval.dense import dense_search, tenant_dense_plan
from pilito_pipeline.retrieval.fusion import reciprocal_rank_fusion
from pilito_pipeline.retrieval.query import QueryAnalysis, analyze_query
from pilito_pipeline.retrieval.rerank import CrossEncoderReranker, RerankUnavailable, rerank_passage
from pilito_pipeline.retrieval.retriever import embed_query, fusion_weights
from pilito_pipeline.settings import Settings, get_settings
from pilito_pipeline.store.db import connect

METHODS = ("dense", "bm25", "hybrid", "hybrid+rerank")


@dataclass(frozen=True)
class LabelledQuery:
    id: str
    query: str
    relevant: tuple[str, ...]


@dataclass(frozen=True)
class MethodScores:
    method: str
    queries: int
    mrr: float | None
    ndcg_at_10: float | None
    recall_at_k: float | None
    k: int
    mean_latency_ms: float | None
    note: str = ""


def url_path(url: str) -> str:
    """The page key labels use: the URL's path, '/' meaning '/index.html'."""
    path = urlsplit(url).path or "/"
    return path + "index.html" if path.endswith("/") else path


def load_queries(path: Path) -> list[LabelledQuery]:
    queries = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            query = LabelledQuery(str(item["id"]), str(item["query"]), tuple(url_path(p) for p in item["relevant"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{number}: not a labelled query ({exc})") from None
        if not query.query.strip() or not query.relevant:
            raise ValueError(f"{path}:{number}: a query needs text and at least one relevant page")
        queries.append(query)
    if not queries:
        raise ValueError(f"{path}: no queries")
    return queries


def reciprocal_rank(ranking: Sequence[str], relevant: Sequence[str]) -> float:
    for rank, page in enumerate(ranking, start=1):
        if page in relevant:
            return 1.0 / rank
    return 0.0


def ndcg_at(ranking: Sequence[str], relevant: Sequence[str], k: int) -> float:
    dcg = sum(1.0 / math.log2(rank + 1) for rank, page in enumerate(ranking[:k], start=1) if page in relevant)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(relevant), k) + 1))
    return dcg / ideal


def recall_at(ranking: Sequence[str], relevant: Sequence[str], k: int) -> float:
    return len(set(ranking[:k]) & set(relevant)) / len(set(relevant))


def run_evaluation(
    database_url: str,
    tenant_id: str,
    queries_file: Path,
    *,
    k: int = 10,
    settings: Settings | None = None,
    embedder: EmbeddingProvider | None = None,
    config: RetrievalConfig | None = None,
    reranker: CrossEncoderReranker | None = None,
    chunk_types: Sequence[str] = ("website",),
) -> list[MethodScores]:
    """One row per method over every query of `queries_file` (see the module docstring).

    The cross-encoder is `config.rerank_model`, else RERANK_MODEL; without one (or if it cannot be
    loaded) the hybrid+rerank row says so instead of scoring.
    """
    settings = settings or get_settings()
    config = config or RetrievalConfig.from_settings(settings)
    embedder = embedder or build_provider(settings)
    reranker = reranker or CrossEncoderReranker(max_length=config.rerank_max_length,
                                                batch_size=config.rerank_batch_size)
    queries = load_queries(queries_file)
    rankings: dict[str, list[list[str]]] = {m: [] for m in METHODS}
    latencies: dict[str, list[float]] = {m: [] for m in METHODS}
    rerank_note = "" if config.rerank_model else "no cross-encoder configured (RERANK_MODEL)"
    embedder.embed(["warm-up"])  # keep the first inference's start-up cost out of the timings
    with connect(database_url, autocommit=True) as conn:
        plan = tenant_dense_plan(conn, tenant_id)
        for labelled in queries:
            analysis = analyze_query(labelled.query)
            timed = _Timer()
            vector = timed("embed", lambda a=analysis: embed_query(embedder, a))
            dense = timed("dense", lambda: dense_search(conn, tenant_id, chunk_types, vector, config.dense_top_k,
                                                        plan=plan, ef_search=config.hnsw_ef_search))
            sparse = timed("bm25", lambda a=analysis: bm25_search(conn, tenant_id, chunk_types, a.terms,
                                                                  config.sparse_top_k, k1=config.bm25_k1, b=config.bm25_b))
            fused = timed("fusion", lambda: [i for i, _ in reciprocal_rank_fusion(
                {"dense": [i for i, _ in dense], "bm25": [i for i, _ in sparse]},
                k=config.rrf_k, limit=config.fused_limit, weights=fusion_weights(config, analysis))])
            chunks = fetch_chunks(conn, tenant_id, {i for i, _ in dense} | {i for i, _ in sparse})
            paths = {i: url_path(c.url or c.document_id or "") for i, c in chunks.items()}
            ms = timed.ms
            outcomes = {
                "dense": ([i for i, _ in dense], ms["embed"] + ms["dense"]),
                "bm25": ([i for i, _ in sparse], ms["bm25"]),
                "hybrid": (fused, ms["embed"] + ms["dense"] + ms["bm25"] + ms["fusion"]),
            }
            if not rerank_note:
                try:
                    reranked = timed("rerank", lambda a=analysis: _rerank(reranker, config, a, fused, chunks))
                    outcomes["hybrid+rerank"] = (reranked, outcomes["hybrid"][1] + ms["rerank"])
                except RerankUnavailable as exc:
                    rerank_note = str(exc)
            for method, (ids, latency) in outcomes.items():
                rankings[method].append(_pages(ids, paths))
                latencies[method].append(latency)
    rows = []
    for method in METHODS:
        if method == "hybrid+rerank" and rerank_note:
            rows.append(MethodScores(method, len(queries), None, None, None, k, None, rerank_note))
            continue
        ranked = rankings[method]
        rows.append(MethodScores(
            method, len(queries),
            mrr=float(np.mean([reciprocal_rank(r, q.relevant) for r, q in zip(ranked, queries, strict=True)])),
            ndcg_at_10=float(np.mean([ndcg_at(r, q.relevant, 10) for r, q in zip(ranked, queries, strict=True)])),
            recall_at_k=float(np.mean([recall_at(r, q.relevant, k) for r, q in zip(ranked, queries, strict=True)])),
            k=k, mean_latency_ms=float(np.mean(latencies[method])),
        ))
    return rows


def format_table(rows: Sequence[MethodScores]) -> str:
    k = rows[0].k if rows else 10
    lines = [f"{'method':<15} {'queries':>7} {'MRR':>6} {'nDCG@10':>8} {f'recall@{k}':>10} {'ms/query':>9}"]
    for row in rows:
        if row.mrr is None:
            lines.append(f"{row.method:<15} {row.queries:>7}   — {row.note}")
            continue
        lines.append(f"{row.method:<15} {row.queries:>7} {row.mrr:>6.3f} {row.ndcg_at_10:>8.3f}"
                     f" {row.recall_at_k:>10.3f} {row.mean_latency_ms:>9.1f}")
    return "\n".join(lines)


def _pages(chunk_ids: Sequence[int], paths: dict[int, str]) -> list[str]:
    return list(dict.fromkeys(paths[i] for i in chunk_ids if i in paths))


def _rerank(reranker: CrossEncoderReranker, config: RetrievalConfig, analysis: QueryAnalysis,
            fused: list[int], chunks: dict) -> list[int]:
    ids = [i for i in fused if i in chunks]
    passages = [rerank_passage(chunks[i].section_title, chunks[i].text, chunks[i].tldr, config.rerank_passage)
                for i in ids]
    scores = reranker.score(config.rerank_model, analysis.text, passages)
    return [ids[j] for j in np.argsort(-scores, kind="stable")]


class _Timer:
    """Runs callables and keeps their wall time per name, in ms."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    def __call__(self, name: str, run: Callable[[], object]):
        started = time.perf_counter()
        result = run()
        self.ms[name] = (time.perf_counter() - started) * 1000
        return result
