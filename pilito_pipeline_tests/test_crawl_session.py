"""The crawl session without Dagster (issue 19, item 9): a crawl that dies mid-way leaves every page
in a state that holds on its own; a 404 page keeps its chunks as `failed` (never `gone` with
chunks) until a crawl's end retires it, chunks and state in one transaction."""

from __future__ import annotations

import dataclasses

import psycopg
import pytest

from pilito_pipeline.crawl import CrawlAbortedError, CrawlConfig, crawl_website
from pilito_pipeline.ingest.crawl_session import CrawlSession
from pilito_pipeline.store.checks import chunks_without_live_page
from pilito_pipeline.store.db import connect
from pilito_pipeline.store.knowledge import PageVersion, store_pages
from pilito_pipeline.store.pages import mark_partitions_registered
from pilito_pipeline.store.websites import register_website
from pilito_pipeline_tests.crawl.conftest import Site, site  # noqa: F401 (the fixture)
from pilito_pipeline_tests.defs.test_retirement import page_text
from pilito_pipeline_tests.store.test_knowledge import MODEL, make_rows

CONFIG = CrawlConfig(rate_limit_seconds=0, timeout_seconds=60, allowed_hosts=("127.0.0.1",), max_concurrency=1)


def session(conn: psycopg.Connection, website_id: int) -> CrawlSession:
    return CrawlSession(conn, website_id, mark_partitions_registered, first_batch=5, batch=50)


def index_live_pages(conn: psycopg.Connection) -> None:
    """What the page runs do: every live page gets 2 chunks of its current text."""
    pages = conn.execute("SELECT partition_key, tenant_id, content_hash FROM pages WHERE document IS NOT NULL").fetchall()
    store_pages(conn, {p["partition_key"]: PageVersion(p["tenant_id"], p["content_hash"], make_rows(
        (p["tenant_id"], "website", p["partition_key"]), 2)) for p in pages}, MODEL)


def page(conn: psycopg.Connection, path: str, site: Site) -> dict:
    return conn.execute(
        "SELECT status, http_status, document IS NOT NULL AS live,"
        " (SELECT count(*) FROM tenant_knowledge k WHERE k.source_id = p.partition_key) AS chunks"
        " FROM pages p WHERE url = %s", (site.url(path),),
    ).fetchone()


def gone_pages_holding_chunks(conn: psycopg.Connection) -> int:
    return conn.execute(
        "SELECT count(*) AS n FROM pages p WHERE status = 'gone' AND (document IS NOT NULL OR EXISTS"
        " (SELECT 1 FROM tenant_knowledge k WHERE k.source_id = p.partition_key))"
    ).fetchone()["n"]


def test_a_crawl_that_dies_after_a_404_leaves_the_page_failed_with_its_chunks_until_a_crawl_ends(
    database_url: str, site: Site
) -> None:
    leaves = ["/a", "/b", "/c", "/d"]
    site.page("/", leaves, text=page_text("/"))
    for leaf in leaves:
        site.page(leaf, ["/"], text=page_text(leaf))
    with connect(database_url, autocommit=True) as conn:
        website = register_website(conn, "t1", site.url("/"))
        first = session(conn, website.id)
        for crawled in crawl_website(website.url, CONFIG, first.stored_validators):
            first.record(crawled)
        first.finish()
        index_live_pages(conn)
        assert page(conn, "/b", site) == {"status": "fetched", "http_status": 200, "live": True, "chunks": 2}

        site.add("/b", "not found", status=404)
        dying = session(conn, website.id)
        for crawled in crawl_website(website.url, CONFIG, dying.stored_validators):
            dying.record(crawled)
            if crawled.url == site.url("/b"):
                break  # the worker dies here: no finish, no fail

        assert page(conn, "/b", site) == {"status": "failed", "http_status": 404, "live": True, "chunks": 2}
        assert gone_pages_holding_chunks(conn) == 0 and chunks_without_live_page(conn, None) == {}

        final = session(conn, website.id)
        for crawled in crawl_website(website.url, CONFIG, final.stored_validators):
            final.record(crawled)
        retirement, _ = final.finish()

        assert len(retirement.retired) == 1 and retirement.chunks_deleted == 2
        assert page(conn, "/b", site) == {"status": "gone", "http_status": 404, "live": False, "chunks": 0}
        assert gone_pages_holding_chunks(conn) == 0 and chunks_without_live_page(conn, None) == {}


def test_a_crawl_that_raises_is_closed_as_failed_and_the_error_goes_on(database_url: str, site: Site) -> None:
    """`CrawlSession.crawl` records each outcome and finishes; when the crawl raises (robots.txt
    unreachable), the crawl is closed as failed with its error, nothing is retired, and it raises."""
    site.add("/robots.txt", "busy", status=500, content_type="text/plain")
    site.page("/", ["/a"])
    unstored: list[str] = []
    with connect(database_url, autocommit=True) as conn:
        website = register_website(conn, "t1", site.url("/"))
        with pytest.raises(CrawlAbortedError, match=r"robots.txt unreachable \(HTTP 500\)"):
            session(conn, website.id).crawl(dataclasses.replace(CONFIG, max_retries=0),
                                            on_unstored=lambda record: unstored.append(record.url))
        row = conn.execute("SELECT status, last_error FROM websites WHERE id = %s", (website.id,)).fetchone()
    assert row["status"] == "failed" and "robots.txt unreachable" in row["last_error"]
    assert unstored == []


def test_a_whole_crawl_records_its_pages_and_tells_of_the_ones_not_stored(database_url: str, site: Site) -> None:
    site.page("/", ["/a", "/notes.txt"], text=page_text("/"))
    site.page("/a", ["/"], text=page_text("/a"))
    site.add("/notes.txt", "plain notes", content_type="text/plain")
    unstored: list[str] = []
    with connect(database_url, autocommit=True) as conn:
        website = register_website(conn, "t1", site.url("/"))
        retirement, summary = session(conn, website.id).crawl(CONFIG, on_unstored=lambda r: unstored.append(r.url))
        status = conn.execute("SELECT status FROM websites WHERE id = %s", (website.id,)).fetchone()["status"]
    assert status == "ready" and summary["fetched"] == 2 and retirement.retired == []
    assert unstored == [site.url("/notes.txt")]
