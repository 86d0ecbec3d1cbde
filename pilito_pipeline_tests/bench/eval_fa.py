"""Retrieval quality on the Persian handbook set and the demo sets, scored on `retrieve_context`.

    python -m pilito_pipeline_tests.bench.eval_fa [--data-dir /tmp/pilito-eval] [--tldr]   (make eval-fa)

Ingests the handbook site (fixtures/handbook_fa: 209 pages + index, Debian's fa-IR Administrator's
Handbook) and the demo site into an embedded PostgreSQL of their own, the way the pipeline does it
without crawling (extract -> chunk -> embed with the configured provider -> upsert; `--tldr` also
embeds TL;DRs), prints the ingestion time, then the evaluation table of each set
(`retrieval.evaluate.run_evaluation`: dense / BM25 / hybrid / hybrid+rerank when RERANK_MODEL is
set), with the configuration of `RetrievalConfig.from_settings`. Tenants already stored in
`--data-dir` are reused (delete the folder to re-ingest).
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path

from pilito_pipeline.embed import build_provider
from pilito_pipeline.retrieval.config import RetrievalConfig
from pilito_pipeline.retrieval.evaluate import format_table, run_evaluation
from pilito_pipeline.settings import get_settings
from pilito_pipeline.store.db import connect
from pilito_pipeline.store.migrate import migrate
from pilito_pipeline.store.server import embedded_server_uri, stop_embedded_server
from pilito_pipeline_tests.retrieval.demo_corpus import demo_rows, handbook_rows, store_pages

EVAL_SETS = Path(__file__).resolve().parents[2] / "pilito_pipeline" / "retrieval" / "eval_sets"
SETS = (("handbook", handbook_rows, "handbook_fa.jsonl"), ("demo", demo_rows, "demo_fa.jsonl"),
        ("demo", demo_rows, "demo_en.jsonl"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/pilito-eval"))
    parser.add_argument("--tldr", action="store_true", help="embed TL;DRs and search them too")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    settings = replace(get_settings(), embed_tldr=True) if args.tldr else get_settings()
    provider = build_provider(settings)
    url = embedded_server_uri(args.data_dir)
    try:
        migrate(url, embedding_dimension=provider.dimension)
        with connect(url) as conn:
            for tenant, rows, _ in SETS:
                stored = conn.execute("SELECT count(*) AS n FROM tenant_knowledge WHERE tenant_id = %s",
                                      (tenant,)).fetchone()["n"]
                if stored:
                    continue
                started = time.perf_counter()
                written = store_pages(conn, rows(tenant), provider, embed_tldr=settings.embed_tldr)
                print(f"ingested {tenant}: {written} rows in {time.perf_counter() - started:.1f} s"
                      f" ({provider.model_name})", flush=True)
        config = replace(RetrievalConfig.from_settings(settings), dense_tldr=args.tldr)
        for tenant, _, name in SETS:
            print(f"\n{name} (tenant {tenant}, {provider.model_name})", flush=True)
            print(format_table(run_evaluation(url, tenant, EVAL_SETS / name, settings=settings,
                                              embedder=provider, config=config)), flush=True)
    finally:
        stop_embedded_server(args.data_dir)


if __name__ == "__main__":
    main()
