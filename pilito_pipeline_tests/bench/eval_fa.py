"""Retrieval quality on every labelled set, scored on `retrieve_context`, tune and test halves apart.

    python -m pilito_pipeline_tests.bench.eval_fa [--data-dir /tmp/pilito-eval] [--tldr] [--sets a,b]
                                                   [--details DIR]                       (make eval-fa)

Ingests, into an embedded PostgreSQL of their own, the way the pipeline does it without crawling
(extract -> chunk -> embed with the configured provider -> upsert; `--tldr` also embeds TL;DRs):
- `handbook`: the Persian handbook site (fixtures/handbook_fa: 209 pages + index, Debian's fa-IR
  Administrator's Handbook), for `handbook_fa` (202 paraphrased questions) and
  `handbook_informal_fa` (227 questions typed the way customers type: spoken verb forms,
  loanwords, typos, keywords);
- `demo`: the demo site, for `demo_fa` and `demo_en`;
- `gimp`: GIMP's English help, 272 pages of three hub-heavy sections (fixtures/gimp_en), for
  `gimp_hubs_en` (120 questions: a specific page that hub pages also list, or the hub itself);
- `mixed`: both sites as one, for `crosslingual` (Persian questions whose answer is an English GIMP
  page, English questions whose answer is a Persian handbook page).
Then prints, per set, dense / BM25 / hybrid (/ hybrid+rerank when RERANK_MODEL is set) for the tune
half, the test half (`evaluate.query_split`) and each query class, with the configuration of
`RetrievalConfig.from_settings`. Tenants already stored in `--data-dir` are reused (delete the
folder to re-ingest). `--details DIR` writes each set's per-query dump there.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

from pilito_pipeline.embed import build_provider
from pilito_pipeline.ingest.term_vectors import refresh_term_vectors
from pilito_pipeline.retrieval.config import RetrievalConfig
from pilito_pipeline.retrieval.evaluate import (
    METHODS, details, evaluate_queries, format_table, load_queries, score_rows,
)
from pilito_pipeline.settings import get_settings
from pilito_pipeline.store.db import connect
from pilito_pipeline.store.migrate import migrate
from pilito_pipeline.store.server import embedded_server_uri, stop_embedded_server
from pilito_pipeline_tests.retrieval.demo_corpus import demo_rows, gimp_rows, handbook_rows, mixed_rows, store_pages

EVAL_SETS = Path(__file__).resolve().parents[2] / "pilito_pipeline" / "retrieval" / "eval_sets"
TENANTS = {"handbook": handbook_rows, "demo": demo_rows, "gimp": gimp_rows, "mixed": mixed_rows}
SETS = {"handbook_fa": "handbook", "handbook_informal_fa": "handbook", "demo_fa": "demo", "demo_en": "demo",
        "gimp_hubs_en": "gimp", "crosslingual": "mixed"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/pilito-eval"))
    parser.add_argument("--tldr", action="store_true", help="embed TL;DRs and search them too")
    parser.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, of {', '.join(SETS)}")
    parser.add_argument("--details", type=Path, help="folder for each set's per-query dump (JSONL)")
    args = parser.parse_args()
    sets = [name for name in args.sets.split(",") if name]
    unknown = [name for name in sets if name not in SETS]
    if unknown:
        parser.error(f"unknown sets {', '.join(unknown)}; expected some of {', '.join(SETS)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    settings = replace(get_settings(), embed_tldr=True) if args.tldr else get_settings()
    provider = build_provider(settings)
    url = embedded_server_uri(args.data_dir)
    try:
        migrate(url, embedding_dimension=provider.dimension)
        with connect(url) as conn:
            for tenant in dict.fromkeys(SETS[name] for name in sets):
                stored = conn.execute("SELECT count(*) AS n FROM tenant_knowledge WHERE tenant_id = %s",
                                      (tenant,)).fetchone()["n"]
                if stored:
                    continue
                started = time.perf_counter()
                written = store_pages(conn, TENANTS[tenant](tenant), provider, embed_tldr=settings.embed_tldr)
                print(f"ingested {tenant}: {written} rows in {time.perf_counter() - started:.1f} s"
                      f" ({provider.model_name})", flush=True)
            conn.commit()
            for tenant in dict.fromkeys(SETS[name] for name in sets):
                started = time.perf_counter()
                terms = refresh_term_vectors(conn, tenant, provider)  # what the maintenance asset does
                if terms:
                    print(f"{tenant}: {terms} English vocabulary terms embedded in"
                          f" {time.perf_counter() - started:.1f} s", flush=True)
        config = replace(RetrievalConfig.from_settings(settings), dense_tldr=args.tldr)
        for name in sets:
            queries = load_queries(EVAL_SETS / f"{name}.jsonl")
            outcomes = evaluate_queries(url, SETS[name], queries, settings=settings, embedder=provider,
                                        config=config)
            groups = ["tune", "test"] + (["class"] if any(q.label for q in queries) else [])
            print(f"\n{name} (tenant {SETS[name]}, {provider.model_name})", flush=True)
            print(format_table(score_rows(outcomes, METHODS, groups=groups)), flush=True)
            if args.details:
                args.details.mkdir(parents=True, exist_ok=True)
                with open(args.details / f"{name}.jsonl", "w", encoding="utf-8") as out:
                    out.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in details(outcomes))
    finally:
        stop_embedded_server(args.data_dir)


if __name__ == "__main__":
    main()
