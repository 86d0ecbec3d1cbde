"""Many tenants drain fairly, through the real daemon: 100 tenants each register a 20-page site on
127.0.0.1 at once; Dagster's sensors crawl them and launch page runs with the real embedding model
under dagster.yaml's limits.

Prints the time until every tenant's pages are searchable, the longest any tenant waited for its
first searchable page (and the median), runs launched by kind, and failed runs (goal: 0).

`--embedding service` starts the embedding service (`embed-serve`, as `up` does) and points the
page runs at it (the model loaded once, their requests batched together; it prints how many
requests its batches carried); `in-process` (the default) has every page run load the model.

    python -m pilito_pipeline_tests.bench.bench_tenants [--tenants 100] [--pages 20] [--embedding service]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

os.environ.setdefault("LC_ALL", "C.UTF-8")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import dagster as dg  # noqa: E402

from pilito_pipeline.app.embedding_process import EmbeddingServiceProcess, start_embedding_service  # noqa: E402
from pilito_pipeline.defs.partitions import RUN_KIND_TAG  # noqa: E402
from pilito_pipeline.settings import Settings  # noqa: E402
from pilito_pipeline.store.db import connect  # noqa: E402
from pilito_pipeline.app.up import stop_on_signals  # noqa: E402
from pilito_pipeline_tests.dagster_stack import dagster_stack, generate_site, served  # noqa: E402

ALL_TENANTS_DEADLINE = 3600.0  # seconds for every tenant's site: many sites on a loaded machine


def progress(database_url: str) -> dict[str, tuple[int, int, str]]:
    """Per tenant: (pages searchable, pages with text, website status)."""
    with connect(database_url) as conn:
        rows = conn.execute(
            "SELECT w.tenant_id, w.status,"
            " count(p.id) FILTER (WHERE p.content_hash IS NOT NULL AND p.processed_hash = p.content_hash) AS done,"
            " count(p.id) FILTER (WHERE p.content_hash IS NOT NULL) AS with_text"
            " FROM websites w LEFT JOIN pages p ON p.website_id = w.id GROUP BY w.tenant_id, w.status"
        ).fetchall()
    return {r["tenant_id"]: (r["done"], r["with_text"], r["status"]) for r in rows}


def follow_tenants(database_url: str, tenants: int, registered: float) -> dict[str, float]:
    """Poll until every tenant's site is done, printing progress every 30 s; per tenant, the seconds
    from registration until its first page was searchable."""
    first_seen: dict[str, float] = {}
    reported = 0.0
    while True:
        now = time.monotonic()
        state = progress(database_url)
        for tenant, (done, _, _) in state.items():
            if done and tenant not in first_seen:
                first_seen[tenant] = now - registered
        finished = [t for t, (done, total, status) in state.items() if status == "ready" and done == total > 0]
        if len(finished) == tenants:
            return first_seen
        if now - registered > ALL_TENANTS_DEADLINE:
            raise TimeoutError(f"{len(finished)} of {tenants} tenants done after {now - registered:.0f} s")
        if now - reported > 30:
            print(f"  {now - registered:5.0f} s: {len(first_seen)} tenants with a searchable page, "
                  f"{len(finished)} done", flush=True)
            reported = now
        time.sleep(1)


@contextmanager
def embedding_service(data_dir: Path, wanted: bool) -> Iterator[EmbeddingServiceProcess | None]:
    """The embedding service on `data_dir` when `wanted`, ready (model loaded), stopped on exit."""
    if not wanted:
        yield None
        return
    service = start_embedding_service(Settings(data_dir=data_dir))
    try:
        service.wait_until_ready()
        yield service
    finally:
        service.stop()


def batching(service: EmbeddingServiceProcess) -> str:
    with urllib.request.urlopen(f"{service.url}/health", timeout=30) as response:
        health = json.loads(response.read())
    kinds = ("passage", "latent_terms")  # page runs of e5 ask for passages with their latent terms
    batches = sum(health["batches"].get(kind, 0) for kind in kinds)
    requests = sum(health["batched_requests"].get(kind, 0) for kind in kinds)
    return f"{requests} passage requests in {batches} model calls ({requests / max(batches, 1):.2f} a call)"


def print_report(args: argparse.Namespace, all_s: float, waits: list[float], kinds: Counter[str], failed: int,
                 page_sizes: list[int], batched: str) -> None:
    print(f"\n{args.tenants} tenants × {args.pages} pages, registered at once; embedding {args.embedding}")
    print(f"time until all searchable:                  {all_s:7.1f} s")
    print(f"longest wait for a tenant's first page:     {waits[-1]:7.1f} s (median {statistics.median(waits):.1f} s)")
    print(f"runs launched: {dict(kinds)}; page run sizes: median {statistics.median(page_sizes):.0f}, "
          f"max {max(page_sizes)}")
    print(f"failed runs: {failed}   goal 0: {'MET' if not failed else 'MISSED'}")
    if batched:
        print(f"embedding service: {batched}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--pages", type=int, default=20)
    parser.add_argument("--rate", type=float, default=0.05, help="CRAWL_RATE_LIMIT_SECONDS")
    parser.add_argument("--embedding", choices=["in-process", "service"], default="in-process",
                        help="page runs load the model themselves, or send their texts to the embedding service")
    args = parser.parse_args()
    stop_on_signals()  # Ctrl-C or SIGTERM (`timeout`) stops Dagster and the database on the way out

    env = {"CRAWL_ALLOWED_HOSTS": "127.0.0.1", "CRAWL_RATE_LIMIT_SECONDS": str(args.rate)}
    tenants = [f"t{n:03d}" for n in range(args.tenants)]
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as sites:
        tmp_path = Path(tmp)
        urls = {}
        for tenant in tenants:
            generate_site(tmp_path / "sites" / tenant, args.pages, name=tenant)
            urls[tenant] = sites.enter_context(served(tmp_path / "sites" / tenant))
        with embedding_service(tmp_path / "stack", args.embedding == "service") as service, \
                dagster_stack(tmp_path / "stack", {**env, "EMBEDDING_SERVICE_URL": service.url if service else ""}) as stack:
            print(f"Dagster up (embedding: {args.embedding}); registering {args.tenants} sites of {args.pages} pages"
                  " at once", flush=True)
            registered = time.monotonic()
            for tenant in tenants:
                stack.register(tenant, urls[tenant], max_pages=args.pages + 1)
            first_seen = follow_tenants(stack.database_url, len(tenants), registered)
            all_s = time.monotonic() - registered
            runs = stack.runs()
            kinds = Counter(r.dagster_run.tags.get(RUN_KIND_TAG, "other") for r in runs)
            failed = [r for r in runs if r.dagster_run.status == dg.DagsterRunStatus.FAILURE]
            page_sizes = [len(stack.run_keys(r, stack.partition_order())) for r in stack.page_runs()]
            batched = batching(service) if service else ""

    print_report(args, all_s, sorted(first_seen.values()), kinds, len(failed), page_sizes, batched)


if __name__ == "__main__":
    main()
