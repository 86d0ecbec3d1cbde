"""Bytes per page in the `pilito` database after a site is crawled and its pages processed through
the Dagster assets (the Persian handbook, 210 pages): each table's share, and the copies of a page's
text (the stored document in `pages`, chunks in `tenant_knowledge`, intermediate values if any).

    python -m pilito_pipeline_tests.bench.bench_storage
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ.setdefault("LC_ALL", "C.UTF-8")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import dagster as dg  # noqa: E402

from pilito_pipeline.defs.io_managers import run_values_io_manager  # noqa: E402
from pilito_pipeline.defs.resources import CrawlerResource, DatabaseResource, EmbeddingResource  # noqa: E402
from pilito_pipeline.store.db import connect  # noqa: E402
from pilito_pipeline.store.migrate import migrate  # noqa: E402
from pilito_pipeline.store.server import embedded_server_uri, stop_embedded_server  # noqa: E402
from pilito_pipeline.store.websites import register_website  # noqa: E402
from pilito_pipeline_tests.defs.conftest import run_sensors_and_runs  # noqa: E402
from pilito_pipeline_tests.dagster_stack import served  # noqa: E402

SITE = Path(__file__).resolve().parents[1] / "fixtures" / "handbook_fa" / "site"
TABLES = ("pages", "asset_values", "tenant_knowledge", "bm25_postings", "page_failures")


def resources(database_url: str) -> dict:
    database = DatabaseResource(database_url=database_url)
    found = {
        "database": database,
        "crawler": CrawlerResource(rate_limit_seconds=0.0, allowed_hosts=["127.0.0.1"]),
        "embedder": EmbeddingResource(model="all-MiniLM-L6-v2"),
    }
    return {**found, "page_values_io_manager": run_values_io_manager}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, served(SITE) as site_url:
        database_url = os.environ.get("DATABASE_URL") or embedded_server_uri(Path(tmp) / "pg", "bench_storage")
        migrate(database_url)
        try:
            with connect(database_url) as conn:
                register_website(conn, "bench", site_url, max_pages=400)
                conn.commit()
            with dg.instance_for_test() as instance:
                ran = run_sensors_and_runs(instance, resources(database_url))
            with connect(database_url) as conn:
                pages = conn.execute("SELECT count(*) AS n FROM pages WHERE document IS NOT NULL").fetchone()["n"]
                documents = conn.execute(
                    "SELECT coalesce(sum(pg_column_size(document)), 0) AS n FROM pages").fetchone()["n"]
                sizes = {
                    table: conn.execute(
                        "SELECT coalesce(pg_total_relation_size(to_regclass(%s)), 0) AS n", (table,)
                    ).fetchone()["n"]
                    for table in TABLES
                }
                total = conn.execute("SELECT pg_database_size(current_database()) AS n").fetchone()["n"]
        finally:
            if not os.environ.get("DATABASE_URL"):
                stop_embedded_server(Path(tmp) / "pg")
    print(f"{pages} pages with a document, {ran['page_runs']} page runs, {ran['crawl_runs']} crawl")
    print(f"stored documents (pages.document, compressed): {documents / pages:,.0f} bytes a page")
    for table, size in sizes.items():
        print(f"{table:>18}: {size / pages:>10,.0f} bytes a page ({size:,} bytes)")
    print(f"{'whole database':>18}: {total / pages:>10,.0f} bytes a page ({total:,} bytes)")


if __name__ == "__main__":
    main()
