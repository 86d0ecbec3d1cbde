"""A page run writes only pages still live with the text it read, and every writer takes its locks
in one order (issue 19, item 2): a crawl retiring pages while a page run over them is embedding
never has its retirement undone, and neither writer is aborted as a deadlock."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from datetime import datetime

import psycopg
import pytest

from pilito_pipeline.store.checks import chunks_without_live_page
from pilito_pipeline.store.db import connect
from pilito_pipeline.store.knowledge import PageVersion, store_pages
from pilito_pipeline.store.pages import PageRecord, load_pages, mark_partitions_registered, record_page
from pilito_pipeline.store.retirement import RetirementPolicy, close_crawl
from pilito_pipeline.store.websites import register_website
from pilito_pipeline_tests.store.test_knowledge import MODEL, make_rows

TENANT = "t1"
NO_GUARD = RetirementPolicy(max_share=1.0)  # these crawls retire most of their site on purpose


def document(url: str, version: str) -> dict:
    return {"url": url, "title": url, "language": "en", "blocks": [], "version": version}


def record(conn: psycopg.Connection, website_id: int, url: str, version: str) -> str:
    key, _ = record_page(conn, TENANT, website_id, PageRecord(
        url=url, depth=1, status="fetched", http_status=200, document=document(url, version),
        content_hash=f"hash-{version}", links=(),
    ))
    return key


def make_site(conn: psycopg.Connection, name: str, pages: int) -> tuple[int, list[str]]:
    """A website whose `pages` pages are registered and processed (3 chunks each, version v1)."""
    website = register_website(conn, TENANT, f"https://{name}.example/")
    keys = [record(conn, website.id, f"https://{name}.example/{i}", "v1") for i in range(pages)]
    mark_partitions_registered(conn, keys)
    conn.commit()
    store_pages(conn, versions(conn, keys, "v1", rows=3), MODEL)
    return website.id, keys


def versions(conn: psycopg.Connection, keys: list[str], label: str, rows: int) -> dict[str, PageVersion]:
    """What a page run makes of the pages as it reads them now (chunks labelled `label`)."""
    read = load_pages(conn, keys)
    conn.commit()
    return {
        key: PageVersion(page.tenant_id, page.content_hash, make_rows((TENANT, "website", key), rows, label))
        for key, page in read.items()
    }


def crawl_seeing_only(conn: psycopg.Connection, website_id: int, keep: list[str]) -> datetime:
    """A crawl that reaches only the pages `keep` (the rest are unlinked now); returns its start."""
    started = conn.execute("SELECT now() AS t").fetchone()["t"]
    conn.commit()  # as `mark_crawl_started`: the pages are recorded in later transactions
    for url in conn.execute("SELECT url FROM pages WHERE partition_key = ANY(%s)", (keep,)).fetchall():
        record(conn, website_id, url["url"], "v1")
    conn.commit()
    return started


def chunk_sources(conn: psycopg.Connection) -> dict[str, set[str]]:
    """Page key → versions of its stored chunks."""
    found: dict[str, set[str]] = {}
    for row in conn.execute("SELECT source_id, metadata->>'version' AS v FROM tenant_knowledge"):
        found.setdefault(row["source_id"], set()).add(row["v"])
    return found


def test_a_page_retired_between_the_runs_read_and_its_write_stays_retired(database_url: str) -> None:
    with connect(database_url) as conn:
        website_id, keys = make_site(conn, "a", 6)
        read = versions(conn, keys, "v2", rows=4)  # the page run has read and embedded...
        started = crawl_seeing_only(conn, website_id, keys[:2])
        retirement = close_crawl(conn, website_id, started, clean=True, policy=NO_GUARD)
        conn.commit()
        assert sorted(retirement.retired) == sorted(keys[2:]) and retirement.chunks_deleted == 4 * 3

        stored = store_pages(conn, read, MODEL)  # ...and writes now

        assert stored.skipped == sorted(keys[2:])
        assert stored.stats.inserted == 2 * 4 - 2 * 3 and stored.stats.updated == 2 * 3
        assert chunk_sources(conn) == {key: {"v2"} for key in keys[:2]}
        assert chunks_without_live_page(conn, None) == {}
        gone = conn.execute(
            "SELECT count(*) AS n FROM pages WHERE partition_key = ANY(%s) AND status = 'gone'"
            " AND document IS NULL AND processed_hash IS NULL AND NOT partition_registered", (keys[2:],),
        ).fetchone()["n"]
        assert gone == 4


def test_a_page_whose_text_changed_after_the_run_read_it_stays_pending(database_url: str) -> None:
    with connect(database_url) as conn:
        website_id, keys = make_site(conn, "b", 2)
        read = versions(conn, keys, "v2", rows=3)
        changed_url = conn.execute("SELECT url FROM pages WHERE partition_key = %s", (keys[0],)).fetchone()["url"]
        record(conn, website_id, changed_url, "v3")  # the crawl stored newer text meanwhile
        conn.commit()

        stored = store_pages(conn, read, MODEL)

        assert stored.skipped == [keys[0]]
        assert chunk_sources(conn) == {keys[0]: {"v1"}, keys[1]: {"v2"}}
        page = conn.execute("SELECT content_hash, processed_hash FROM pages WHERE partition_key = %s",
                            (keys[0],)).fetchone()
        assert page == {"content_hash": "hash-v3", "processed_hash": "hash-v1"}  # still pending


def run_together(*writers: Callable[[], object]) -> list[BaseException]:
    """Start the writers at the same moment in threads; the errors they raised."""
    barrier = threading.Barrier(len(writers))
    errors: list[BaseException] = []

    def run(writer: Callable[[], object]) -> None:
        try:
            barrier.wait(timeout=60)
            writer()
        except BaseException as exc:  # reported to the test, which fails on any
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(writer,)) for writer in writers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
        assert not thread.is_alive(), "a writer is still waiting"
    return errors


@pytest.mark.slow
def test_a_crawl_retiring_pages_while_a_page_run_writes_them_20_times(database_url: str) -> None:
    """Twenty races of the two writers over the same pages, in two connections: neither is aborted
    (no deadlock, whatever the interleaving), and no retired page holds a chunk afterwards."""
    rng = random.Random(19)
    with connect(database_url) as setup:
        for repetition in range(20):
            website_id, keys = make_site(setup, f"race{repetition}", 24)
            keep = sorted(rng.sample(keys, 8))
            read = versions(setup, keys, "v2", rows=6)
            started = crawl_seeing_only(setup, website_id, keep)
            outcome: dict[str, object] = {}

            def page_run() -> None:
                with connect(database_url) as conn:
                    outcome["stored"] = store_pages(conn, dict(rng.sample(sorted(read.items()), len(read))), MODEL)

            def crawl_end() -> None:
                with connect(database_url) as conn:
                    outcome["retirement"] = close_crawl(
                        conn, website_id, started, clean=True, policy=NO_GUARD)
                    conn.commit()

            errors = run_together(page_run, crawl_end)

            assert errors == [], (repetition, errors)
            retired = set(keys) - set(keep)
            assert set(outcome["retirement"].retired) == retired, repetition
            stored = chunk_sources(setup)
            assert not retired & stored.keys(), repetition
            assert {key: stored[key] for key in keep} == {key: {"v2"} for key in keep}, repetition
            assert set(outcome["stored"].skipped) in (set(), retired), repetition
            assert chunks_without_live_page(setup, None) == {}
            setup.commit()
