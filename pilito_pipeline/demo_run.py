"""`pilito-pipeline demo`: the whole system on embedded defaults, watched through the Dagster UI.

Starts the embedded PostgreSQL (data under `.pilito/`, reused next time), serves the bundled sample
site on 127.0.0.1, starts Dagster (webserver + daemon), registers the site for tenant `demo`, waits
while the sensors crawl it and chunk/embed its pages, asks two questions, and keeps the UI up until
Ctrl-C (or SIGTERM), which stops everything it started, the embedded database included.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from pilito_pipeline.settings import settings_from_env

DEMO_TENANT = "demo"
QUESTIONS = ("شهریه دوره آیلتس چقدر است؟", "Do you offer scholarships for students?")


def _wait_for(condition: Callable[[], bool], timeout: float, what: str, on_tick: Callable[[], None]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        on_tick()
        time.sleep(2)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_demo(port: int = 3000, site_port: int = 8765, keep_running: bool = True) -> int:
    # Ctrl-C and SIGTERM both stop everything, even when started from a shell that ignores SIGINT.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    os.environ.setdefault("CRAWL_ALLOWED_HOSTS", "127.0.0.1")
    os.environ.setdefault("CRAWL_RATE_LIMIT_SECONDS", "0.05")
    settings = settings_from_env()

    from pilito_pipeline.cli import print_answer
    from pilito_pipeline.demo import serve_demo_site
    from pilito_pipeline.launcher import start_dagster
    from pilito_pipeline.retrieval import Retriever
    from pilito_pipeline.store.db import connect, resolve_database_url
    from pilito_pipeline.store.migrate import migrate
    from pilito_pipeline.store.server import stop_embedded_server
    from pilito_pipeline.store.websites import register_website

    started = time.monotonic()
    url = resolve_database_url(settings)
    migrate(url, embedding_dimension=settings.embedding_dimension)
    print(f"database ready ({'embedded, ' + str(settings.data_dir) if settings.uses_embedded_postgres else 'DATABASE_URL'})")

    site, site_url = serve_demo_site("127.0.0.1", site_port)
    print(f"sample website served at {site_url}")
    dagster = start_dagster(
        settings, url,
        {"CRAWL_ALLOWED_HOSTS": ",".join(settings.crawl_allowed_hosts),
         "CRAWL_RATE_LIMIT_SECONDS": str(settings.crawl_rate_limit_seconds)},
        port=port,
    )
    try:
        dagster.wait_until_ready()
        print(f"Dagster UI up at {dagster.url} (log: {dagster.log_path})")
        with connect(url) as conn:
            website = register_website(conn, DEMO_TENANT, site_url, max_pages=50)
            conn.commit()
        print(f"registered {site_url} as {website.partition_key} for tenant '{DEMO_TENANT}'; waiting for Dagster...")

        def crawl_done() -> bool:
            with connect(url) as conn:
                row = conn.execute(
                    "SELECT status, last_crawled_at >= crawl_requested_at - interval '1 second' AS done,"
                    " progress, last_error FROM websites WHERE id = %s", (website.id,),
                ).fetchone()
            if row["status"] == "failed":
                raise RuntimeError(f"crawl failed: {row['last_error']}")
            return bool(row["done"]) and row["status"] == "ready"

        def pages_done() -> bool:
            with connect(url) as conn:
                row = conn.execute(
                    "SELECT count(*) FILTER (WHERE content_hash IS DISTINCT FROM processed_hash"
                    "   AND status IN ('fetched','not_modified')) AS pending,"
                    " count(*) FILTER (WHERE processed_hash IS NOT NULL) AS done FROM pages WHERE website_id = %s",
                    (website.id,),
                ).fetchone()
            return row["pending"] == 0 and row["done"] > 0

        last_report: list[str] = []

        def report() -> None:
            with connect(url) as conn:
                row = conn.execute(
                    "SELECT (SELECT progress FROM websites WHERE id = %(w)s) AS progress,"
                    " (SELECT count(*) FROM tenant_knowledge WHERE tenant_id = %(t)s) AS chunks",
                    {"w": website.id, "t": DEMO_TENANT},
                ).fetchone()
            line = f"  crawl {row['progress'] or 'queued'}; chunks stored: {row['chunks']}"
            if line not in last_report:
                print(line, flush=True)
                last_report.append(line)

        _wait_for(crawl_done, 600, "the crawl run", report)
        _wait_for(pages_done, 600, "the chunk/embedding runs", report)
        print(f"pipeline done in {time.monotonic() - started:.0f}s (since start of the demo command)")

        with Retriever.from_settings(settings) as retriever:
            retriever.warm_up()  # load the query embedder now, so latencies below are per question
            for question in QUESTIONS:
                print(f"\nQ: {question}")
                print_answer(retriever.retrieve_context(question, DEMO_TENANT).to_dict())

        if keep_running:
            print(f"\nDagster UI: {dagster.url}  (Ctrl-C stops everything)")
            try:
                signal.pause()
            except KeyboardInterrupt:
                pass
    finally:
        print("\nstopping Dagster, the sample site and the embedded database...")
        dagster.stop()
        site.shutdown()
        if settings.uses_embedded_postgres:
            stop_embedded_server(settings.data_dir)
    return 0
