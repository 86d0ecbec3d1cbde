"""Evaluation harness: MRR, nDCG@10 and recall@k of dense-only, BM25-only, hybrid and hybrid+rerank,
each scored on `Retriever.retrieve_context` itself, the call the chat backend makes.

Queries are JSONL lines `{"id": ..., "query": ..., "relevant": ["/url/path.html", ...]}`; relevance
is by page (URL path). A method is the production retriever with one of its own switches set
(`RetrievalConfig.arms`, the cross-encoder), so any change to the retriever changes the figures.
Each call's `RetrievalResult.ranking` (the primary group's candidates after fusion and rerank,
before the top-k cut and packing) becomes a page ranking (first occurrence of each page); the
`in context` column is the share of queries with a relevant page in the packed context the chat
backend receives. Feature flags are left at their defaults (no Redis). Gains are binary.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from pilito_pipeline.embed import EmbeddingProvider, build_provider
from pilito_pipeline.retrieval.config import RetrievalConfig
from pilito_pipeline.retrieval.flags import FeatureFlags
from pilito_pipeline.retrieval.rerank import CrossEncoderReranker
from pilito_pipeline.retrieval.retriever import Retriever
from pilito_pipeline.settings import Settings, get_settings

METHODS = ("dense", "bm25", "hybrid", "hybrid+rerank")
EXPECTED_METHOD = {"dense": "dense_only", "bm25": "bm25_only", "hybrid": "hybrid", "hybrid+rerank": "hybrid+rerank"}


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
    in_context: float | None = None
    """Share of queries with a relevant page in the packed context."""


def method_config(config: RetrievalConfig, method: str) -> RetrievalConfig:
    """The retriever configuration a method row runs: `config` with one switch set."""
    if method == "hybrid+rerank":
        return replace(config, arms="hybrid")
    if method in ("dense", "bm25", "hybrid"):
        return replace(config, arms=method, rerank_model="")
    raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")


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
    primary_source: str = "website",
    methods: Sequence[str] = METHODS,
) -> list[MethodScores]:
    """One row per method over every query of `queries_file` (see the module docstring).

    The cross-encoder is `config.rerank_model`, else RERANK_MODEL; without one the hybrid+rerank
    row says so instead of scoring, and a method whose searches degraded says how often.
    """
    settings = settings or get_settings()
    config = config or RetrievalConfig.from_settings(settings)
    embedder = embedder or build_provider(settings)
    reranker = reranker or CrossEncoderReranker(max_length=config.rerank_max_length,
                                                batch_size=config.rerank_batch_size)
    queries = load_queries(queries_file)
    rows = []
    for method in methods:
        if method == "hybrid+rerank" and not config.rerank_model:
            rows.append(MethodScores(method, len(queries), None, None, None, k, None,
                                     "no cross-encoder configured (RERANK_MODEL)"))
            continue
        with Retriever(database_url, embedder=embedder, flags=FeatureFlags(""), config=method_config(config, method),
                       reranker=reranker) as retriever:
            retriever.warm_up()  # keep model loading out of the timings
            rankings, contexts, latencies, off = [], [], [], 0
            for labelled in queries:
                result = retriever.retrieve_context(labelled.query, tenant_id, primary_source=primary_source)
                rankings.append(_pages(result.ranking))
                contexts.append(_pages(result.primary_context))
                latencies.append(result.latency_ms)
                off += result.retrieval_method != EXPECTED_METHOD[method]
        pairs = list(zip(rankings, queries, strict=True))
        rows.append(MethodScores(
            method, len(queries),
            mrr=float(np.mean([reciprocal_rank(r, q.relevant) for r, q in pairs])),
            ndcg_at_10=float(np.mean([ndcg_at(r, q.relevant, 10) for r, q in pairs])),
            recall_at_k=float(np.mean([recall_at(r, q.relevant, k) for r, q in pairs])),
            k=k, mean_latency_ms=float(np.mean(latencies)),
            note=f"{off} queries answered by another method (degraded or arm weight 0)" if off else "",
            in_context=float(np.mean([any(p in q.relevant for p in c) for c, q in zip(contexts, queries, strict=True)])),
        ))
    return rows


def format_table(rows: Sequence[MethodScores]) -> str:
    k = rows[0].k if rows else 10
    lines = [f"{'method':<15} {'queries':>7} {'MRR':>6} {'nDCG@10':>8} {f'recall@{k}':>10} {'in context':>10}"
             f" {'ms/query':>9}"]
    for row in rows:
        if row.mrr is None:
            lines.append(f"{row.method:<15} {row.queries:>7}   — {row.note}")
            continue
        lines.append(f"{row.method:<15} {row.queries:>7} {row.mrr:>6.3f} {row.ndcg_at_10:>8.3f}"
                     f" {row.recall_at_k:>10.3f} {row.in_context:>10.3f} {row.mean_latency_ms:>9.1f}"
                     + (f"  ({row.note})" if row.note else ""))
    return "\n".join(lines)


def _pages(chunks: Sequence) -> list[str]:
    return list(dict.fromkeys(url_path(c.url or c.document_id or "") for c in chunks))
