"""Evaluation harness: MRR, nDCG@10 and recall@k of dense-only, BM25-only, hybrid and hybrid+rerank,
each scored on `Retriever.retrieve_context` itself, the call the chat backend makes.

Queries are JSONL lines `{"id": ..., "query": ..., "relevant": ["/url/path.html", ...], "class": ...}`
(the class label is optional); relevance is by page (URL path). Every query belongs to one half of
its set, `tune` or `test`, by a hash of its id (`query_split`): tune on one half, report the other. A method is the production retriever with one of its own switches set
(`RetrievalConfig.arms`, the cross-encoder), so any change to the retriever changes the figures.
Each call's `RetrievalResult.ranking` (the primary group's candidates after fusion and rerank,
before the top-k cut and packing) becomes a page ranking (first occurrence of each page); the
`in context` column is the share of queries with a relevant page in the packed context the chat
backend receives. Feature flags are left at their defaults (no Redis). Gains are binary.
"""

from __future__ import annotations

import json
import math
import zlib
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

METHODS = ("dense", "bm25", "latent", "hybrid", "hybrid+rerank")
EXPECTED_METHOD = {"dense": "dense_only", "bm25": "bm25_only", "latent": "latent_only", "hybrid": "hybrid",
                   "hybrid+rerank": "hybrid+rerank"}


SPLITS = ("tune", "test")


def query_split(query_id: str) -> str:
    """The half of its set a query belongs to: fixed by its id, whatever the file's order."""
    return SPLITS[zlib.crc32(query_id.encode("utf-8")) % 2]


@dataclass(frozen=True)
class LabelledQuery:
    id: str
    query: str
    relevant: tuple[str, ...]
    label: str = ""
    """The query's class (`"class"` in the file), for per-class rows."""

    @property
    def split(self) -> str:
        return query_split(self.id)


@dataclass(frozen=True)
class QueryOutcome:
    """Where one method put one query's relevant pages."""

    method: str
    query: LabelledQuery
    ranking: tuple[str, ...]
    """Pages in the order of the method's candidate ranking."""
    context: tuple[str, ...]
    """Pages in the packed context."""
    latency_ms: float
    retrieval_method: str

    @property
    def rank(self) -> int | None:
        """1-based rank of the first relevant page, None when it is not among the candidates."""
        return next((n for n, page in enumerate(self.ranking, start=1) if page in self.query.relevant), None)

    @property
    def in_context(self) -> bool:
        return any(page in self.query.relevant for page in self.context)


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
    group: str = "all"
    """Which queries the row covers: all, a split (tune/test), a class, or split/class."""


def method_config(config: RetrievalConfig, method: str) -> RetrievalConfig:
    """The retriever configuration a method row runs: `config` with one switch set."""
    if method == "hybrid+rerank":
        return replace(config, arms="hybrid")
    if method in ("dense", "bm25", "latent", "hybrid"):
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
            query = LabelledQuery(str(item["id"]), str(item["query"]), tuple(url_path(p) for p in item["relevant"]),
                                  str(item.get("class", "")))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{number}: not a labelled query ({exc})") from None
        if not query.query.strip() or not query.relevant:
            raise ValueError(f"{path}:{number}: a query needs text and at least one relevant page")
        queries.append(query)
    if not queries:
        raise ValueError(f"{path}: no queries")
    duplicates = sorted({q.id for q in queries if sum(other.id == q.id for other in queries) > 1})
    if duplicates:
        raise ValueError(f"{path}: duplicate query ids {', '.join(duplicates[:5])}")
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
    groups: Sequence[str] = ("all",),
) -> list[MethodScores]:
    """Rows per method over the queries of `queries_file` (see the module docstring), for each of
    `groups` ("all", "tune", "test", "class", "split/class": see `score_rows`).

    The cross-encoder is `config.rerank_model`, else RERANK_MODEL; without one the hybrid+rerank
    row says so instead of scoring, and a method whose searches degraded says how often.
    """
    outcomes = evaluate_queries(database_url, tenant_id, load_queries(queries_file), settings=settings,
                                embedder=embedder, config=config, reranker=reranker,
                                primary_source=primary_source, methods=methods)
    return score_rows(outcomes, methods, k=k, groups=groups)


def evaluate_queries(
    database_url: str,
    tenant_id: str,
    queries: Sequence[LabelledQuery],
    *,
    settings: Settings | None = None,
    embedder: EmbeddingProvider | None = None,
    config: RetrievalConfig | None = None,
    reranker: CrossEncoderReranker | None = None,
    primary_source: str = "website",
    methods: Sequence[str] = METHODS,
) -> dict[str, list[QueryOutcome]]:
    """Each method's outcome for every query, scored on `retrieve_context` (the rerank method is
    left out when no cross-encoder is configured, the latent-term one when the embedder has no
    sparse head)."""
    settings = settings or get_settings()
    config = config or RetrievalConfig.from_settings(settings)
    embedder = embedder or build_provider(settings)
    reranker = reranker or CrossEncoderReranker(max_length=config.rerank_max_length,
                                                batch_size=config.rerank_batch_size)
    outcomes: dict[str, list[QueryOutcome]] = {}
    for method in methods:
        if method == "hybrid+rerank" and not config.rerank_model:
            continue
        if method == "latent" and not hasattr(embedder, "query_latent_terms"):
            continue
        with Retriever(database_url, embedder=embedder, flags=FeatureFlags(""), config=method_config(config, method),
                       reranker=reranker) as retriever:
            retriever.warm_up()  # keep model loading out of the timings
            outcomes[method] = []
            for labelled in queries:
                result = retriever.retrieve_context(labelled.query, tenant_id, primary_source=primary_source)
                outcomes[method].append(QueryOutcome(method, labelled, tuple(_pages(result.ranking)),
                                                     tuple(_pages(result.primary_context)), result.latency_ms,
                                                     result.retrieval_method))
    return outcomes


def _group_keys(query: LabelledQuery, group: str) -> list[str]:
    if group in ("all", *SPLITS):
        return [group] if group in ("all", query.split) else []
    if group == "class":
        return [query.label] if query.label else []
    if group == "split/class":
        return [f"{query.split}/{query.label}"] if query.label else []
    raise ValueError(f"unknown group {group!r}; expected all, tune, test, class or split/class")


def score_rows(outcomes: dict[str, list[QueryOutcome]], methods: Sequence[str], *, k: int = 10,
               groups: Sequence[str] = ("all",)) -> list[MethodScores]:
    """Rows of every group, then method: MRR, nDCG@10, recall@k, in context, latency."""
    rows = []
    for group in groups:
        keys: dict[str, None] = {}
        for outcome in next(iter(outcomes.values()), []):
            keys.update(dict.fromkeys(_group_keys(outcome.query, group)))
        for key in sorted(keys):
            for method in methods:
                if method not in outcomes:
                    if key != "all":
                        continue
                    rows.append(MethodScores(method, 0, None, None, None, k, None, _MISSING[method], group=key))
                    continue
                chosen = [o for o in outcomes[method] if key in _group_keys(o.query, group)]
                rows.append(_scores(method, chosen, k, key))
    return rows


_MISSING = {"hybrid+rerank": "no cross-encoder configured (RERANK_MODEL)",
            "latent": "the embedding model has no sparse head (latent terms: e5 only)"}


def _scores(method: str, chosen: Sequence[QueryOutcome], k: int, group: str) -> MethodScores:
    off = sum(o.retrieval_method != EXPECTED_METHOD[method] for o in chosen)
    return MethodScores(
        method, len(chosen),
        mrr=float(np.mean([reciprocal_rank(o.ranking, o.query.relevant) for o in chosen])),
        ndcg_at_10=float(np.mean([ndcg_at(o.ranking, o.query.relevant, 10) for o in chosen])),
        recall_at_k=float(np.mean([recall_at(o.ranking, o.query.relevant, k) for o in chosen])),
        k=k, mean_latency_ms=float(np.mean([o.latency_ms for o in chosen])),
        note=f"{off} queries answered by another method (degraded or arm weight 0)" if off else "",
        in_context=float(np.mean([o.in_context for o in chosen])), group=group,
    )


def details(outcomes: dict[str, list[QueryOutcome]]) -> list[dict[str, object]]:
    """One record per query: where each method ranked its first relevant page, whether it reached
    the packed context, and the top pages of each method (the `--details` dump)."""
    methods = list(outcomes)
    records = []
    for position, labelled in enumerate(o.query for o in outcomes[methods[0]]):
        record: dict[str, object] = {"id": labelled.id, "class": labelled.label, "split": labelled.split,
                                     "query": labelled.query, "relevant": list(labelled.relevant)}
        for method in methods:
            outcome = outcomes[method][position]
            record[method] = {"rank": outcome.rank, "in_context": outcome.in_context,
                              "top": list(outcome.ranking[:5]), "context": list(outcome.context)}
        records.append(record)
    return records


def format_table(rows: Sequence[MethodScores]) -> str:
    k = rows[0].k if rows else 10
    grouped = any(row.group != "all" for row in rows)
    lines = [(f"{'queries':<22} " if grouped else "")
             + f"{'method':<15} {'queries':>7} {'MRR':>6} {'nDCG@10':>8} {f'recall@{k}':>10} {'in context':>10}"
             f" {'ms/query':>9}"]
    for row in rows:
        head = f"{row.group:<22} " if grouped else ""
        if row.mrr is None:
            lines.append(f"{head}{row.method:<15} {row.queries:>7}   — {row.note}")
            continue
        lines.append(f"{head}{row.method:<15} {row.queries:>7} {row.mrr:>6.3f} {row.ndcg_at_10:>8.3f}"
                     f" {row.recall_at_k:>10.3f} {row.in_context:>10.3f} {row.mean_latency_ms:>9.1f}"
                     + (f"  ({row.note})" if row.note else ""))
    return "\n".join(lines)


def _pages(chunks: Sequence) -> list[str]:
    return list(dict.fromkeys(url_path(c.url or c.document_id or "") for c in chunks))
