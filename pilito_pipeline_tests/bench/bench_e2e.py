"""First answers fast, through the real daemon: a new site on 127.0.0.1 is registered while Dagster
(webserver + daemon + run queue, project dagster.yaml) runs; the sensors crawl it and launch page
runs with the real embedding model (the default, multilingual e5).

Sites: `handbook_fa` (default), the Persian Debian handbook fixture (real Persian pages, what most
tenants have; 209 pages, of which the crawl takes `--pages`, 200 by default: the goal's "200-page
site"); `generated`, `--pages` short English pages of random words (3 paragraphs of 60 words: the
per-page bookkeeping weighs most there).

Prints the time from registration to the first searchable page and to all pages searchable, each
run's queue/start/end and step times, and the pure embedding time of the same texts (same model,
already loaded, measured in the same run): the baseline. Goals: first page ≤ 30 s; all ≤ 1.3 ×
pure embedding + 15 s. Leaves out: the chat backend's side (retrieve_context is called once, at
the end, to show the pages answer).

    python -m pilito_pipeline_tests.bench.bench_e2e [--site handbook_fa|generated] [--pages 200] [--rate 0.05]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LC_ALL", "C.UTF-8")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import dagster as dg  # noqa: E402

from pilito_pipeline.defs.partitions import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG, RUN_KIND_TAG  # noqa: E402
from pilito_pipeline.embed import build_provider, embed_rows  # noqa: E402
from pilito_pipeline.ingest.sources import knowledge_rows  # noqa: E402
from pilito_pipeline.retrieval import Retriever  # noqa: E402
from pilito_pipeline.settings import settings_from_env  # noqa: E402
from pilito_pipeline.store.db import connect  # noqa: E402
from pilito_pipeline.app.up import stop_on_signals  # noqa: E402
from pilito_pipeline.text import ExtractedDocument, chunk_document  # noqa: E402
from pilito_pipeline_tests.retrieval.demo_corpus import HANDBOOK_SITE_DIR  # noqa: E402
from pilito_pipeline_tests.dagster_stack import dagster_stack, generate_site, served  # noqa: E402
from pilito_pipeline_tests.waiting import wait_for  # noqa: E402

TENANT = "bench"
BENCH_DEADLINE = 900.0  # seconds a wait may take: a large site on a loaded machine
FIRST_GOAL_S = 30.0


def searchable_pages(database_url: str, website_id: int) -> tuple[int, int, str]:
    """(pages with embedded chunks, pages with text, website status)."""
    with connect(database_url) as conn:
        row = conn.execute(
            "SELECT (SELECT status FROM websites WHERE id = %(w)s) AS status,"
            " count(*) FILTER (WHERE content_hash IS NOT NULL) AS with_text,"
            " count(*) FILTER (WHERE content_hash IS NOT NULL AND processed_hash = content_hash) AS done"
            " FROM pages WHERE website_id = %(w)s",
            {"w": website_id},
        ).fetchone()
    return row["done"], row["with_text"], row["status"]


def pure_embedding_seconds(database_url: str, website_id: int) -> tuple[float, int]:
    """Embed every text of the site's pages once, as the page runs do (TL;DRs only when
    EMBED_TLDR), model already loaded: (seconds, texts)."""
    settings = settings_from_env()
    provider = build_provider(settings)
    provider.embed(["warm up"])
    with connect(database_url) as conn:
        pages = conn.execute(
            "SELECT partition_key, url, document FROM pages WHERE website_id = %s AND document IS NOT NULL",
            (website_id,),
        ).fetchall()
    rows = [
        row
        for page in pages
        for row in knowledge_rows(TENANT, "website", page["partition_key"], page["url"],
                                  chunk_document(ExtractedDocument.from_dict(page["document"])))
    ]
    started = time.perf_counter()
    counts = embed_rows(rows, provider, tldr=settings.embed_tldr)  # what the page runs embed
    return time.perf_counter() - started, counts.embedded


def run_timeline(instance: dg.DagsterInstance, records: list[dg.RunRecord], origin: float) -> list[str]:
    """Each run's kind and pages, with when it was queued, started and ended and when its steps
    started, in seconds after `origin`: where the time between registration and answers goes."""
    lines = []
    for record in sorted(records, key=lambda r: r.create_timestamp.timestamp()):
        tags = record.dagster_run.tags
        what = tags.get(RUN_KIND_TAG, record.dagster_run.job_name)
        if what == "pages":
            what += f" {tags[PARTITION_RANGE_START_TAG]}..{tags[PARTITION_RANGE_END_TAG]}"
        at = [record.create_timestamp.timestamp(), record.start_time, record.end_time]
        lines.append(f"{what:24} " + " → ".join("-" if t is None else f"{t - origin:5.1f}" for t in at)
                     + f"  {record.dagster_run.status.value}; steps started: "
                     + ", ".join(f"{e.step_key} {e.timestamp - origin:.1f}" for e in instance.all_logs(
                         record.dagster_run.run_id, of_type=dg.DagsterEventType.STEP_START)))
    return lines


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--site", choices=("handbook_fa", "generated"), default="handbook_fa")
    parser.add_argument("--pages", type=int, default=200, help="pages to crawl (the generated site has as many)")
    parser.add_argument("--rate", type=float, default=0.05, help="CRAWL_RATE_LIMIT_SECONDS")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    stop_on_signals()  # Ctrl-C or SIGTERM (`timeout`) stops Dagster and the database on the way out

    env = {"CRAWL_ALLOWED_HOSTS": "127.0.0.1", "CRAWL_RATE_LIMIT_SECONDS": str(args.rate)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        if args.site == "generated":
            site, pages, question = tmp_path / "site", args.pages, "course price and scholarship"
            generate_site(site, pages)
        else:
            site, pages, question = HANDBOOK_SITE_DIR, args.pages, "چطور یک بسته نرم‌افزاری را نصب کنم؟"
        with served(site) as url, dagster_stack(tmp_path / "stack", env) as stack:
            print(f"Dagster up ({stack.dagster.url}); registering the {args.site} site, {pages} pages", flush=True)
            registered = time.monotonic()
            registered_wall = time.time()
            website_id = stack.register(TENANT, url, max_pages=pages + 1)
            wait_for("a first searchable page", lambda: searchable_pages(stack.database_url, website_id)[0] > 0,
                     timeout=BENCH_DEADLINE)
            first_s = time.monotonic() - registered

            def all_done() -> bool:
                done, with_text, status = searchable_pages(stack.database_url, website_id)
                return status == "ready" and done == with_text > 0

            wait_for("every page searchable", all_done, timeout=BENCH_DEADLINE)
            all_s = time.monotonic() - registered
            done, _, _ = searchable_pages(stack.database_url, website_id)
            runs = stack.page_runs(TENANT)
            timeline = run_timeline(stack.instance, stack.runs(), registered_wall)
            sizes = sorted(
                (r.create_timestamp, len(stack.run_keys(r, stack.partition_order()))) for r in runs
            )
            with Retriever.from_settings(settings_from_env()) as retriever:
                answer = retriever.retrieve_context(question, TENANT).to_dict()
            pure_s, texts = pure_embedding_seconds(stack.database_url, website_id)

    goal_all = 1.3 * pure_s + 15
    print("runs (seconds after registration): queued → started → ended")
    for line in timeline:
        print("  " + line)
    print(f"pages searchable: {done}; page runs: {len(runs)} of sizes {[n for _, n in sizes]}; "
          f"retrieve_context results: {len(answer['primary_context'])}")
    print(f"time to first searchable page: {first_s:6.1f} s   goal ≤ {FIRST_GOAL_S:.0f} s   "
          f"{'MET' if first_s <= FIRST_GOAL_S else 'MISSED'}")
    print(f"time to all searchable:        {all_s:6.1f} s   goal ≤ 1.3 × pure + 15 = {goal_all:.1f} s   "
          f"{'MET' if all_s <= goal_all else 'MISSED'}")
    print(f"pure embedding ({texts} texts):  {pure_s:6.1f} s   ratio all / pure = {all_s / pure_s:.2f}x")


if __name__ == "__main__":
    main()
