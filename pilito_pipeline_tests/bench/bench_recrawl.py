"""Cost of re-crawling an unchanged site, against the first crawl of it (the baseline), end to end
through the Dagster assets: HTTP requests, 304s, page runs, embeddings computed, seconds.

    python -m pilito_pipeline_tests.bench.bench_recrawl [--pages 200]
"""

from __future__ import annotations

import argparse
import functools
import os
import random
import tempfile
import threading
import time
from collections import Counter
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

os.environ.setdefault("LC_ALL", "C.UTF-8")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import dagster as dg  # noqa: E402

from pilito_pipeline.defs.io_managers import run_values_io_manager  # noqa: E402
from pilito_pipeline.defs.resources import CrawlerResource, DatabaseResource, EmbeddingResource  # noqa: E402
from pilito_pipeline.store.migrate import migrate  # noqa: E402
from pilito_pipeline.store.server import embedded_server_uri, stop_embedded_server  # noqa: E402
from pilito_pipeline.store.db import connect  # noqa: E402
from pilito_pipeline.store.websites import register_website  # noqa: E402
from pilito_pipeline_tests.dagster_stack import write_site_tree  # noqa: E402
from pilito_pipeline_tests.defs.conftest import run_sensors_and_runs  # noqa: E402

WORDS_FA = "آموزش دوره زبان کلاس شهریه ثبت نام استاد ترم آزمون مدرک بورسیه کتاب ساعت تهران آنلاین".split()
WORDS_EN = "course price teacher exam schedule online campus library workshop certificate".split()


def generate_site(root: Path, pages: int, seed: int = 7) -> None:
    """`pages` pages of mixed Persian and English text (`write_site_tree`)."""
    rng = random.Random(seed)

    def page_html(i: int, links: str) -> str:
        paragraphs = "".join(
            "<p>" + " ".join(rng.choice(WORDS_FA + WORDS_EN) for _ in range(60)) + f" صفحه {i}.</p>"
            for _ in range(4)
        )
        return (f"<html lang='fa'><head><title>صفحه {i}</title></head><body><nav>{links}</nav>"
                f"<main><h1>صفحه {i}</h1><h2>بخش اول</h2>{paragraphs}</main></body></html>")

    write_site_tree(root, pages, page_html)


class CountingHandler(SimpleHTTPRequestHandler):
    counts: Counter = Counter()

    def log_request(self, code="-", size="-") -> None:  # noqa: ANN001 - http.server's signature
        self.counts[int(code) if str(code).isdigit() else 0] += 1

    def log_message(self, *args) -> None:  # noqa: ANN002
        pass


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pages", type=int, default=200)
    return parser.parse_args()


def main() -> None:
    args = parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        site_root = tmp_path / "site"
        site_root.mkdir()
        generate_site(site_root, args.pages)
        server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(CountingHandler, directory=str(site_root)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        site_url = f"http://127.0.0.1:{server.server_port}/"

        embedded = not os.environ.get("DATABASE_URL")
        database_url = os.environ.get("DATABASE_URL") or embedded_server_uri(tmp_path / "pg", "bench_recrawl")
        migrate(database_url)
        database = DatabaseResource(database_url=database_url)
        resources = {
            "database": database,
            "crawler": CrawlerResource(rate_limit_seconds=0.0, allowed_hosts=["127.0.0.1"]),
            "embedder": EmbeddingResource(),
            "page_values_io_manager": run_values_io_manager,
        }
        with dg.instance_for_test() as instance:
            results = {}
            for label in ("first crawl", "re-crawl (unchanged)"):
                CountingHandler.counts.clear()
                with connect(database_url) as conn:
                    register_website(conn, "bench", site_url, max_pages=args.pages + 10)
                    conn.commit()
                started = time.perf_counter()
                launched = run_sensors_and_runs(instance, resources)
                seconds = time.perf_counter() - started
                results[label] = {
                    "requests": sum(CountingHandler.counts.values()),
                    "304": CountingHandler.counts[304],
                    "page_runs": launched["page_runs"],
                    "embeddings": launched["embeddings_computed"],
                    "seconds": seconds,
                }
        server.shutdown()
        if embedded:
            stop_embedded_server(tmp_path / "pg")

    print(f"site: {args.pages} pages on loopback, local MiniLM embeddings, in-process Dagster runs")
    print(f"{'':24}{'requests':>9}{'304s':>7}{'page runs':>11}{'embeddings':>12}{'seconds':>9}")
    for label, r in results.items():
        print(f"{label:24}{r['requests']:>9}{r['304']:>7}{r['page_runs']:>11}{r['embeddings']:>12}{r['seconds']:>9.1f}")
    first, again = results["first crawl"], results["re-crawl (unchanged)"]
    print(f"re-crawl / first: time {again['seconds'] / first['seconds']:.2f}x,"
          f" embeddings {again['embeddings']}/{first['embeddings']}")


if __name__ == "__main__":
    main()
