"""Many tenants drain fairly, through the real daemon: 100 tenants each register a 20-page site on
127.0.0.1 at once; Dagster's sensors crawl them and launch page runs with the real embedding model
under dagster.yaml's limits.

Prints the time until every tenant's pages are searchable, the longest any tenant waited for its
first searchable page (and the median), runs launched by kind, and failed runs (goal: 0).

    python -m pilito_pipeline_tests.bench.bench_tenants [--tenants 100] [--pages 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

os.environ.setdefault("LC_ALL", "C.UTF-8")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import dagster as dg  # noqa: E402

from pilito_pipeline.defs.partitions import RUN_KIND_TAG  # noqa: E402
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--pages", type=int, default=20)
    parser.add_argument("--rate", type=float, default=0.05, help="CRAWL_RATE_LIMIT_SECONDS")
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
        with dagster_stack(tmp_path / "stack", env) as stack:
            print(f"Dagster up; registering {args.tenants} sites of {args.pages} pages at once", flush=True)
            registered = time.monotonic()
            for tenant in tenants:
                stack.register(tenant, urls[tenant], max_pages=args.pages + 1)
            first_seen = follow_tenants(stack.database_url, len(tenants), registered)
            all_s = time.monotonic() - registered
            runs = stack.runs()
            kinds = Counter(r.dagster_run.tags.get(RUN_KIND_TAG, "other") for r in runs)
            failed = [r for r in runs if r.dagster_run.status == dg.DagsterRunStatus.FAILURE]
            page_sizes = [len(stack.run_keys(r, stack.partition_order())) for r in stack.page_runs()]

    waits = sorted(first_seen.values())
    print(f"\n{args.tenants} tenants × {args.pages} pages, registered at once")
    print(f"time until all searchable:                  {all_s:7.1f} s")
    print(f"longest wait for a tenant's first page:     {waits[-1]:7.1f} s (median {statistics.median(waits):.1f} s)")
    print(f"runs launched: {dict(kinds)}; page run sizes: median {statistics.median(page_sizes):.0f}, "
          f"max {max(page_sizes)}")
    print(f"failed runs: {len(failed)}   goal 0: {'MET' if not failed else 'MISSED'}")


if __name__ == "__main__":
    main()
