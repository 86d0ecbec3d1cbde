"""Crawler throughput and memory: `python -m pilito_pipeline_tests.bench.bench_crawl`.

Serves generated sites (200 and 2,000 pages, ~6 KB of Persian/English HTML each, 12 links per
page) on 127.0.0.1 from this process, and crawls each one in a fresh subprocess so every peak RSS
is its own. Baseline: a subprocess that imports the crawler and fetches one page. The ratio of
peak RSS (2,000 / 200 pages) shows whether memory stays flat as the site grows.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LINKS_PER_PAGE = 12
PARAGRAPH = (
    "آموزشگاه زبان ما با بیش از ده سال سابقه، دوره‌های مکالمه، آیلتس و زبان کودکان را برگزار می‌کند. "
    "Our language school offers conversation, IELTS and children's courses in central Tehran. "
)


def page_html(site_size: int, index: int) -> bytes:
    links = "".join(
        f'<li><a href="/s{site_size}/p{(index * 7 + k * 13 + 1) % site_size}?utm_source=menu">page</a></li>'
        for k in range(LINKS_PER_PAGE)
    )
    body = "".join(f"<p>{PARAGRAPH}</p>" for _ in range(20))
    return (
        f'<!doctype html><html lang="fa" dir="rtl"><head><meta charset="utf-8"><title>صفحه {index}</title></head>'
        f"<body><nav><ul>{links}</ul></nav><main><h1>صفحه {index}</h1>{body}</main></body></html>"
    ).encode()


class GeneratedSite(BaseHTTPRequestHandler):
    """`/s{size}/p{i}` for i < size; everything else 404 (robots.txt and sitemap.xml included)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid 40 ms delayed-ACK stalls

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        try:
            _, size_part, page_part = path.split("/")
            size, index = int(size_part[1:]), int(page_part[1:])
            if not (size_part.startswith("s") and page_part.startswith("p") and 0 <= index < size):
                raise ValueError(path)
        except ValueError:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = page_html(size, index)
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def crawl_in_this_process(start_url: str, max_pages: int) -> dict[str, object]:
    """Crawl like the Dagster asset does (each page handled, then dropped); report time and peak RSS."""
    from pilito_pipeline.crawl import CrawlConfig, crawl_website

    config = CrawlConfig(max_pages=max_pages, max_depth=50, rate_limit_seconds=0, max_concurrency=4,
                         allowed_hosts=("127.0.0.1",))  # fmt: skip
    outcomes: Counter[str] = Counter()
    html_bytes = 0
    started = time.perf_counter()
    for page in crawl_website(start_url, config):
        outcomes[page.outcome] += 1
        html_bytes += len(page.html or "")
    seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"pages": sum(outcomes.values()), "outcomes": dict(outcomes), "seconds": seconds,
            "html_mb": html_bytes / 1e6, "peak_rss_mb": peak_kib / 1024}  # fmt: skip


def measure(start_url: str, max_pages: int) -> dict[str, object]:
    completed = subprocess.run(
        [sys.executable, "-m", "pilito_pipeline_tests.bench.bench_crawl", "--worker", start_url, str(max_pages)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", nargs=2, metavar=("START_URL", "MAX_PAGES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(crawl_in_this_process(args.worker[0], int(args.worker[1]))))
        return

    server = ThreadingHTTPServer(("127.0.0.1", 0), GeneratedSite)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        baseline = measure(f"{base}/s1/p0", 1)
        small = measure(f"{base}/s200/p0", 200)
        large = measure(f"{base}/s2000/p0", 2000)
    finally:
        server.shutdown()

    print("crawl benchmark (loopback, rate limit 0, 4 workers; server in the parent process)")
    for name, run in (("baseline: 1 page", baseline), ("200-page site", small), ("2,000-page site", large)):
        rate = run["pages"] / run["seconds"]  # type: ignore[operator]
        print(f"  {name:17s} pages={run['pages']:5d}  {run['seconds']:6.2f} s  {rate:7.1f} pages/s  "
              f"peak RSS {run['peak_rss_mb']:6.1f} MB  outcomes={run['outcomes']}")  # fmt: skip
    print(f"  peak RSS ratio 2,000 / 200 pages: {large['peak_rss_mb'] / small['peak_rss_mb']:.3f}")  # type: ignore[operator]
    growth_small = small["peak_rss_mb"] - baseline["peak_rss_mb"]  # type: ignore[operator]
    growth_large = large["peak_rss_mb"] - baseline["peak_rss_mb"]  # type: ignore[operator]
    print(f"  RSS above baseline: 200 pages {growth_small:+.1f} MB, 2,000 pages {growth_large:+.1f} MB")
    rate_small = small["pages"] / small["seconds"]  # type: ignore[operator]
    rate_large = large["pages"] / large["seconds"]  # type: ignore[operator]
    print(f"  throughput ratio 2,000 / 200 pages: {rate_large / rate_small:.2f}")


if __name__ == "__main__":
    main()
