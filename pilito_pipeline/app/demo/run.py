"""`pilito-pipeline demo`: the whole system on embedded defaults, watched through the Dagster UI.

The stack of `pilito-pipeline up` (embedded PostgreSQL under `.pilito/`, reused next time; the
embedding service; Dagster webserver + daemon) plus the bundled sample site served on 127.0.0.1, registered for tenant `demo`.
It waits while the sensors crawl the site and chunk/embed its pages, asks two questions, and keeps
the UI up until Ctrl-C (or SIGTERM), which stops everything it started, the embedded database included.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from pilito_pipeline.settings import Settings, settings_from_env
from pilito_pipeline.app.up import running_stack, stop_on_signals, wait_for_interrupt

DEMO_TENANT = "demo"
QUESTIONS = ("شهریه دوره آیلتس چقدر است؟", "Do you offer scholarships for students?")


def _wait_for(condition: Callable[[], bool], timeout: float, what: str, on_tick: Callable[[], None]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        on_tick()
        time.sleep(2)


def run_demo(port: int = 3000, site_port: int = 8765, keep_running: bool = True, *, embedding_service: bool = True) -> int:
    stop_on_signals()
    os.environ.setdefault("CRAWL_ALLOWED_HOSTS", "127.0.0.1")
    os.environ.setdefault("CRAWL_RATE_LIMIT_SECONDS", "0.05")
    settings = settings_from_env()

    from pilito_pipeline.app.demo import serve_demo_site
    from pilito_pipeline.embed import configured_model_name
    from pilito_pipeline.store.db import connect
    from pilito_pipeline.store.websites import register_website

    started = time.monotonic()
    with running_stack(settings, port=port, embedding_service=embedding_service) as stack:
        print(f"database ready: {stack.database_description}")
        if stack.embedding is not None:
            print(f"embedding service up at {stack.embedding.url} (log: {stack.embedding.log_path})")
        print(f"Dagster UI up at {stack.dagster.url} (log: {stack.dagster.log_path})")
        site, site_url = serve_demo_site("127.0.0.1", site_port)
        print(f"sample website served at {site_url}")
        try:
            with connect(stack.database_url) as conn:
                website_id = register_website(conn, DEMO_TENANT, site_url, max_pages=50).id
                conn.commit()
            print(f"registered {site_url} for tenant '{DEMO_TENANT}'; waiting for Dagster...", flush=True)
            wait_for_pipeline(stack.database_url, website_id, configured_model_name(settings))
            print(f"pipeline done in {time.monotonic() - started:.0f}s (since start of the demo command)")
            ask_questions(stack.settings)  # queries embedded by the stack's embedding service, if any
            if keep_running:
                print(f"\nDagster UI: {stack.dagster.url}  (Ctrl-C stops everything)", flush=True)
                return wait_for_interrupt(stack)
            print("\nstopping Dagster, the sample site and the database...", flush=True)
        finally:
            site.shutdown()
    return 0


def wait_for_pipeline(url: str, website_id: int, embedding_model: str) -> None:
    """Until Dagster's sensors have crawled the site and chunked/embedded all its pages with
    `embedding_model` (the name the configured provider stores)."""
    from pilito_pipeline.store.ann_indexes import searchable_chunk_count
    from pilito_pipeline.store.db import connect
    from pilito_pipeline.store.pages import count_pending, website_page_keys

    def crawl_done() -> bool:
        with connect(url) as conn:
            row = conn.execute(
                "SELECT status, last_crawled_at >= crawl_requested_at - interval '1 second' AS done,"
                " progress, last_error FROM websites WHERE id = %s", (website_id,),
            ).fetchone()
        if row["status"] == "failed":
            raise RuntimeError(f"crawl failed: {row['last_error']}")
        return bool(row["done"]) and row["status"] == "ready"

    def pages_done() -> bool:
        """No page of the site needs a run (for its text and the configured model), and some are searchable."""
        with connect(url) as conn:
            pending = count_pending(conn, website_page_keys(conn, website_id), embedding_model)
            return pending == 0 and searchable_chunk_count(conn, DEMO_TENANT) > 0

    last_report: list[str] = []

    def report() -> None:
        with connect(url) as conn:
            row = conn.execute(
                "SELECT (SELECT progress FROM websites WHERE id = %(w)s) AS progress,"
                " (SELECT count(*) FROM tenant_knowledge WHERE tenant_id = %(t)s) AS chunks",
                {"w": website_id, "t": DEMO_TENANT},
            ).fetchone()
        line = f"  crawl {row['progress'] or 'queued'}; chunks stored: {row['chunks']}"
        if line not in last_report:
            print(line, flush=True)
            last_report.append(line)

    _wait_for(crawl_done, 600, "the crawl run", report)
    _wait_for(pages_done, 600, "the chunk/embedding runs", report)


def ask_questions(settings: Settings) -> None:
    from pilito_pipeline.app.answers import print_answer
    from pilito_pipeline.retrieval import Retriever

    with Retriever.from_settings(settings) as retriever:
        retriever.warm_up()  # load the query embedder now, so latencies below are per question
        for question in QUESTIONS:
            print(f"\nQ: {question}")
            print_answer(retriever.retrieve_context(question, DEMO_TENANT).to_dict())
