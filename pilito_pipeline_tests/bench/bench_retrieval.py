"""Retrieval benchmark: latency of dense, BM25, hybrid and hybrid+rerank; per-tenant ANN recall.

    python -m pilito_pipeline_tests.bench.bench_retrieval [--chunks 1000000] [--tenants 500] ...

Corpus (documented scheme, since 1M real embeddings are out of reach at ~500 texts/s on 2 cores):
- Real text: the demo site's chunks (Persian/English) plus paragraphs of the Python standard
  library's docstrings (real English prose), `--real-texts` of them, embedded with the packaged
  MiniLM.
- Bulk: every row copies one real text (its text, BM25 terms) and gets a *perturbed copy* of its
  real embedding: normalise(v + sigma * g / sqrt(d)), g ~ N(0, I) (TL;DR embedding: another
  perturbation). So vectors cluster like real embeddings do, with near-duplicates around each
  real point (a hard case for a filtered HNSW graph), but they are not real embeddings.
- Tenants: Zipf-skewed sizes (exponent `--skew`) over `--tenants` tenants.
Loading: binary COPY with the BM25 triggers firing per batch, then VACUUM ANALYZE; then every
tenant with at least `store.ann_indexes.DEFAULT_MIN_CHUNKS` chunks gets its own partial HNSW indexes
(store.ann_indexes.ensure_tenant_ann_index, timed), as the pipeline does after its writes.

Measured per tenant-size bucket: p50/p95 of dense (query embedding + search) with the exact plan,
with the per-tenant HNSW plan (indexed tenants only) and with the plan retrieval picks
(dense.tenant_dense_plan), BM25, hybrid (Retriever.retrieve_context, no rerank) and hybrid +
rerank of the 20 fused candidates (`--rerank`); recall@20 of the per-tenant HNSW plan against the
exact one at several ef_search values, by query language (MiniLM does not cover Persian: Persian
texts embed to nearly one point, so their "top 20" is a near-tie among hundreds of chunks and
recall against exact is not meaningful there). Ratios are against exact dense search.
The rerank model is built here: the packaged MiniLM encoder (6 layers) or its first 2 layers with
an untrained scoring head (real size and speed, no relevance skill: it prices reranking, it does
not measure rerank quality).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

os.environ.setdefault("LC_ALL", "C.UTF-8")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import psycopg  # noqa: E402
from pgvector import HalfVector  # noqa: E402

from pilito_pipeline.embed import LocalProvider  # noqa: E402
from pilito_pipeline.embed.local import PACKAGED_MODEL_NAME  # noqa: E402
from pilito_pipeline.retrieval import FeatureFlags, RetrievalConfig, Retriever  # noqa: E402
from pilito_pipeline.retrieval.bm25 import bm25_search  # noqa: E402
from pilito_pipeline.retrieval.dense import dense_search, tenant_dense_plan  # noqa: E402
from pilito_pipeline.retrieval.query import analyze_query  # noqa: E402
from pilito_pipeline.retrieval.retriever import embed_query  # noqa: E402
from pilito_pipeline.store.ann_indexes import (  # noqa: E402
    DEFAULT_MIN_CHUNKS,
    ensure_tenant_ann_index,
    tenants_needing_ann_index,
)
from pilito_pipeline.store.db import connect  # noqa: E402
from pilito_pipeline.store.migrate import migrate  # noqa: E402
from pilito_pipeline.store.server import embedded_server_uri, stop_embedded_server  # noqa: E402
from pilito_pipeline.text import tokenize  # noqa: E402

SIZE_BUCKETS = ((0, 2_000), (2_000, 10_000), (10_000, 20_000), (20_000, 10**9))
RECALL_EF_SEARCH = (40, 100, 400)


def stdlib_paragraphs(limit: int, seed: int) -> list[str]:
    """Paragraphs (15-120 words) of standard-library docstrings: real English prose, offline."""
    paragraphs: list[str] = []
    for name in sorted(sys.stdlib_module_names):
        if name.startswith("_") or name in {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo"}:
            continue
        try:
            module = importlib.import_module(name)
        except Exception:  # modules that cannot be imported here (platform-specific) are skipped
            continue
        objects = [module, *[v for _, v in inspect.getmembers(module) if inspect.isclass(v) or inspect.isfunction(v)]]
        for obj in objects:
            for block in (inspect.getdoc(obj) or "").split("\n\n"):
                words = block.split()
                if 15 <= len(words) <= 120 and not block.lstrip().startswith((">>>", "-", "*")):
                    paragraphs.append(" ".join(words))
    paragraphs = list(dict.fromkeys(paragraphs))
    random.Random(seed).shuffle(paragraphs)
    return paragraphs[:limit]


def demo_texts() -> list[tuple[str, str]]:
    from pilito_pipeline_tests.retrieval.demo_corpus import demo_rows

    return [(r.section_title, r.full_text) for page in demo_rows("bench") for r in page if not r.is_parent]


def tenant_sizes(total: int, tenants: int, skew: float) -> list[int]:
    weights = np.array([1 / (rank ** skew) for rank in range(1, tenants + 1)])
    sizes = np.maximum(1, np.floor(weights / weights.sum() * total)).astype(int)
    return sizes.tolist()


def perturb(base: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    noisy = base + sigma * rng.standard_normal(base.shape).astype(np.float32) / np.sqrt(base.shape[-1])
    return (noisy / np.linalg.norm(noisy, axis=-1, keepdims=True)).astype(np.float32)


def load_corpus(url: str, texts: list[tuple[str, str]], vectors: np.ndarray, sizes: list[int], sigma: float,
                seed: int, batch: int = 20_000) -> None:
    rng = np.random.default_rng(seed)
    terms = [tokenize(f"{title} {text}") for title, text in texts]
    rows: list[tuple] = []
    loaded = 0
    started = time.perf_counter()

    def flush() -> None:
        nonlocal rows, loaded
        with connect(url) as conn, conn.cursor() as cur:
            with cur.copy("COPY tenant_knowledge (tenant_id, chunk_type, source_id, chunk_index, total_chunks,"
                          " section_title, full_text, tldr, search_terms, content_hash, embedding_model,"
                          " full_embedding, tldr_embedding) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["text", "text", "text", "int4", "int4", "text", "text", "text", "text[]", "text",
                                "text", "halfvec", "halfvec"])
                for row in rows:
                    copy.write_row(row)
            conn.commit()
        loaded += len(rows)
        rows = []
        print(f"  loaded {loaded:,} rows ({time.perf_counter() - started:.0f}s)", flush=True)

    for tenant_number, size in enumerate(sizes):
        tenant = f"tenant{tenant_number:04d}"
        picks = rng.integers(0, len(texts), size)
        full = perturb(vectors[picks], sigma, rng)
        tldr = perturb(vectors[picks], sigma, rng)
        for position, pick in enumerate(picks.tolist()):
            title, text = texts[pick]
            rows.append((tenant, "website", f"p{position // 8}", position % 8, 8,
                         title, text, text[:300], terms[pick], f"h{pick}", PACKAGED_MODEL_NAME,
                         HalfVector(full[position]), HalfVector(tldr[position])))
            if len(rows) >= batch:
                flush()
    if rows:
        flush()
    with connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE tenant_knowledge")
        conn.execute("VACUUM ANALYZE bm25_postings")
    print(f"  loaded and analysed in {time.perf_counter() - started:.0f}s", flush=True)


def build_tenant_indexes(url: str, min_chunks: int) -> list[str]:
    """Per-tenant partial HNSW indexes for every tenant at or above `min_chunks`; returns them."""
    with connect(url, autocommit=True) as conn:
        tenants = tenants_needing_ann_index(conn, min_chunks)
    for tenant in tenants:
        t = time.perf_counter()
        ensure_tenant_ann_index(url, tenant, min_chunks=min_chunks)
        print(f"  partial HNSW indexes (full + TL;DR) of {tenant} built in {time.perf_counter() - t:.1f}s", flush=True)
    with connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE tenant_knowledge")
        return [r["tenant_id"] for r in conn.execute("SELECT tenant_id FROM tenant_ann_indexes ORDER BY 1")]


def build_cross_encoder(folder: Path, layers: int) -> Path:
    """The packaged MiniLM encoder (first `layers` layers) under an untrained 1-logit head."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertModel

    from pilito_pipeline.embed.local import packaged_model_path

    source = packaged_model_path()
    encoder = BertModel.from_pretrained(str(source))
    config = BertConfig.from_pretrained(str(source), num_labels=1, num_hidden_layers=layers)
    model = BertForSequenceClassification(config)
    model.bert.load_state_dict(encoder.state_dict(), strict=False)
    target = folder / f"minilm-l{layers}-cross-encoder"
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(str(source)).save_pretrained(target)
    return target


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def timed(run: Callable[[], object]) -> tuple[object, float]:
    started = time.perf_counter()
    result = run()
    return result, (time.perf_counter() - started) * 1000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=1_000_000)
    parser.add_argument("--tenants", type=int, default=500)
    parser.add_argument("--skew", type=float, default=0.8, help="Zipf exponent of tenant sizes")
    parser.add_argument("--real-texts", type=int, default=4_000)
    parser.add_argument("--sigma", type=float, default=0.35, help="perturbation of copied embeddings")
    parser.add_argument("--queries-per-bucket", type=int, default=40)
    parser.add_argument("--database-url", default="", help="empty: a fresh database on an embedded server")
    parser.add_argument("--reuse", action="store_true", help="skip loading (the database already holds the corpus)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rerank", action=argparse.BooleanOptionalAction, default=True,
                        help="also time hybrid + cross-encoder variants")
    return parser.parse_args(argv)


def bench_database(args: argparse.Namespace) -> str:
    """`--database-url`, else the `bench_retrieval` database of the embedded server in BENCH_PG_DIR
    (made afresh unless `--reuse`); migrated."""
    url = args.database_url
    if not url:
        root = embedded_server_uri(Path(os.environ.get("BENCH_PG_DIR", ".pilito-bench")), database="postgres")
        with psycopg.connect(root, autocommit=True) as conn:
            if not args.reuse:
                conn.execute("DROP DATABASE IF EXISTS bench_retrieval WITH (FORCE)")
                conn.execute("CREATE DATABASE bench_retrieval")
        head, sep, query = root.partition("?")
        url = f"{head.rsplit('/', 1)[0]}/bench_retrieval{sep}{query}"
    migrate(url)
    return url


def load(url: str, provider: LocalProvider, sizes: list[int], args: argparse.Namespace) -> None:
    """Embed the real texts once and load the corpus of `sizes` chunks per tenant from them."""
    texts = demo_texts() + [("", p) for p in stdlib_paragraphs(args.real_texts, args.seed)]
    print(f"real texts: {len(texts):,} (demo site + stdlib docstrings); embedding ...", flush=True)
    vectors, embed_ms = timed(lambda: provider.embed([f"{t} {x}".strip() for t, x in texts]))
    print(f"  {len(texts) / (embed_ms / 1000):.0f} texts/s", flush=True)
    load_corpus(url, texts, vectors, sizes, args.sigma, args.seed)


def rerank_retrievers(
    url: str, provider: LocalProvider, flags: FeatureFlags, config: RetrievalConfig, workdir: Path
) -> dict[str, Retriever]:
    """Hybrid + cross-encoder variants: two model depths, passage kinds and lengths."""
    folder = workdir / "models"
    rerankers = {f"L{layers}": build_cross_encoder(folder, layers) for layers in (6, 2)}
    rerank_variants = {
        "rerank L6 tldr/128": replace(config, rerank_model=str(rerankers["L6"]), rerank_max_length=128),
        "rerank L6 full/256": replace(config, rerank_model=str(rerankers["L6"]), rerank_passage="full",
                                      rerank_max_length=256),
        "rerank L6 tldr/64": replace(config, rerank_model=str(rerankers["L6"]), rerank_max_length=64),
        "rerank L2 tldr/128": replace(config, rerank_model=str(rerankers["L2"]), rerank_max_length=128),
    }
    return {name: Retriever(url, embedder=provider, flags=flags, config=variant, pool_size=2)
            for name, variant in rerank_variants.items()}


def tenants_by_size_bucket(sizes: list[int]) -> dict[tuple[int, int], list[str]]:
    by_bucket: dict[tuple[int, int], list[str]] = {}
    for number, size in enumerate(sizes):
        for bucket in SIZE_BUCKETS:
            if bucket[0] < size <= bucket[1]:
                by_bucket.setdefault(bucket, []).append(f"tenant{number:04d}")
    return by_bucket


@dataclass
class Bench:
    """What every query of the benchmark runs against."""

    provider: LocalProvider
    config: RetrievalConfig
    hybrid: Retriever
    reranking: dict[str, Retriever]
    indexed: set[str]
    size_of: dict[str, int]


def measure_query(conn: psycopg.Connection, bench: Bench, tenant: str, rng: random.Random,
                  samples: dict[str, list[float]], recalls: dict[tuple[int, str], list[float]]) -> None:
    """One query taken from a random chunk of `tenant`: each mode's latency into `samples`, and
    HNSW's recall against the exact search into `recalls` where the tenant has its own index."""
    provider, config = bench.provider, bench.config
    row = conn.execute("SELECT full_text FROM tenant_knowledge WHERE tenant_id = %s"
                       " OFFSET %s LIMIT 1", (tenant, rng.randrange(bench.size_of[tenant]))).fetchone()
    query = " ".join(row["full_text"].split()[:10])
    analysis = analyze_query(query)
    vector, embed = timed(lambda a=analysis: embed_query(provider, a))
    plan, plan_ms = timed(lambda t=tenant: tenant_dense_plan(conn, t))
    exact, exact_ms = timed(lambda: dense_search(conn, tenant, ["website"], vector, 20, model=provider.model_name, plan="exact"))
    measured = [("dense exact (+embed)", embed + exact_ms)]
    if tenant in bench.indexed:
        _, ann_ms = timed(lambda: dense_search(conn, tenant, ["website"], vector, 20, model=provider.model_name, plan="hnsw",
                                                 ef_search=config.hnsw_ef_search))
        measured.append(("dense own hnsw (+embed)", embed + ann_ms))
        truth = {i for i, _ in exact}
        for ef_search in RECALL_EF_SEARCH:
            found = dense_search(conn, tenant, ["website"], vector, 20, model=provider.model_name, plan="hnsw", ef_search=ef_search)
            recalls.setdefault((ef_search, analysis.language), []).append(
                len({i for i, _ in found} & truth) / max(1, len(truth)))
    chosen_ms = plan_ms + (ann_ms if plan == "hnsw" else exact_ms)
    _, bm25_ms = timed(lambda a=analysis: bm25_search(conn, tenant, ["website"], a.terms, 15))
    result, hybrid_ms = timed(lambda q=query, t=tenant: bench.hybrid.retrieve_context(q, t))
    assert result.retrieval_method == "hybrid", result.degradations
    measured += [("dense chosen (+embed)", embed + chosen_ms), ("bm25", bm25_ms), ("hybrid", hybrid_ms)]
    for name, value in measured:
        samples.setdefault(name, []).append(value)
    for name, retriever in bench.reranking.items():
        reranked, ms = timed(lambda q=query, t=tenant, r=retriever: r.retrieve_context(q, t))
        assert reranked.retrieval_method == "hybrid+rerank", reranked.degradations
        samples.setdefault(f"hybrid+{name}", []).append(ms)


def report_bucket(bucket: tuple[int, int], tenants: list[str], indexed: set[str], samples: dict[str, list[float]],
                  recalls: dict[tuple[int, str], list[float]]) -> None:
    label = f"{bucket[0]:,}-{bucket[1]:,}" if bucket[1] < 10**9 else f">{bucket[0]:,}"
    exact_p95 = percentiles(samples["dense exact (+embed)"])[1]
    for name, values in samples.items():
        p50, p95 = percentiles(values)
        print(f"{label:<14} {name:<24} {p50:>8.1f} {p95:>8.1f} {p95 / exact_p95:>9.2f}")
    for (ef_search, language), values in sorted(recalls.items()):
        print(f"{label:<14} {f'recall@20 {language} ef={ef_search}':<24} {statistics.mean(values):>8.3f}"
              f" (min {min(values):.2f}, {len(values)} queries, hnsw vs exact)")
    print(f"{label:<14} {len(tenants)} tenants, {sum(t in indexed for t in tenants)} with their own index",
          flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-retrieval-"))
    url = bench_database(args)
    provider = LocalProvider()
    sizes = tenant_sizes(args.chunks, args.tenants, args.skew)
    print(f"tenants: {len(sizes)}, chunks: {sum(sizes):,}, largest {sizes[0]:,}, median {sorted(sizes)[len(sizes) // 2]:,}")
    if not args.reuse:
        load(url, provider, sizes, args)

    min_chunks = DEFAULT_MIN_CHUNKS
    indexed = set(build_tenant_indexes(url, min_chunks))
    print(f"tenants with their own HNSW indexes (>= {min_chunks:,} chunks): {sorted(indexed) or 'none'}")

    rng = random.Random(args.seed)
    tenants_by_bucket = tenants_by_size_bucket(sizes)
    flags = FeatureFlags("")
    config = RetrievalConfig()
    hybrid = Retriever(url, embedder=provider, flags=flags, config=config, pool_size=2)
    reranking = rerank_retrievers(url, provider, flags, config, workdir) if args.rerank else {}
    for retriever in (hybrid, *reranking.values()):
        retriever.warm_up()
    bench = Bench(provider, config, hybrid, reranking, indexed, {f"tenant{n:04d}": s for n, s in enumerate(sizes)})

    print(f"\nper-tenant HNSW from {min_chunks:,} chunks; ef_search {config.hnsw_ef_search}")
    print(f"{'bucket':<14} {'mode':<24} {'p50 ms':>8} {'p95 ms':>8} {'p95/exact':>9}")
    with connect(url, autocommit=True) as conn:
        for bucket in SIZE_BUCKETS:
            tenants = tenants_by_bucket.get(bucket, [])
            if not tenants:
                continue
            samples: dict[str, list[float]] = {}
            recalls: dict[tuple[int, str], list[float]] = {}
            for _ in range(args.queries_per_bucket):
                measure_query(conn, bench, rng.choice(tenants), rng, samples, recalls)
            report_bucket(bucket, tenants, indexed, samples, recalls)
    for retriever in (hybrid, *reranking.values()):
        retriever.close()
    if not args.database_url:  # the corpus stays in BENCH_PG_DIR for --reuse; the server stops
        stop_embedded_server(Path(os.environ.get("BENCH_PG_DIR", ".pilito-bench")))
    return 0



if __name__ == "__main__":
    sys.exit(main())
