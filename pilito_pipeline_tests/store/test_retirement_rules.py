"""Retirement that means it (issue 19, item 3), at the crawl's end (`close_crawl`), without HTTP:
a held retirement is confirmed only by the same pages missing again, sites never crawled completely
retire pages by age, and no crawl retires more than the guard's share without confirmation."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import psycopg
import pytest

from pilito_pipeline.store.checks import chunks_without_live_page
from pilito_pipeline.store.db import connect
from pilito_pipeline.store.knowledge import PageVersion, store_pages
from pilito_pipeline.store.pages import PageRecord, mark_partitions_registered, record_page
from pilito_pipeline.store.retirement import Retirement, RetirementPolicy, close_crawl
from pilito_pipeline.store.websites import get_website, register_website
from pilito_pipeline_tests.store.test_knowledge import MODEL, make_rows

TENANT = "t1"
POLICY = RetirementPolicy(max_share=0.30, unseen_crawls=3, unseen_days=14)


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    with connect(database_url, autocommit=True) as connection:
        yield connection


def url(i: int) -> str:
    return f"https://site.example/{i}"


def record(conn: psycopg.Connection, website_id: int, i: int, gone: bool = False) -> str:
    page = (PageRecord(url(i), 1, "gone", http_status=404, failure_reason="HTTP 404") if gone else
            PageRecord(url(i), 1, "fetched", http_status=200, document={"i": i}, content_hash=f"h{i}"))
    return record_page(conn, TENANT, website_id, page)[0]


def make_site(conn: psycopg.Connection, pages: int = 10) -> tuple[int, list[str]]:
    """A website with `pages` live pages, 2 chunks each."""
    website = register_website(conn, TENANT, "https://site.example/")
    keys = [record(conn, website.id, i) for i in range(pages)]
    mark_partitions_registered(conn, keys)
    store_pages(conn, {key: PageVersion(TENANT, f"h{i}", make_rows((TENANT, "website", key), 2))
                       for i, key in enumerate(keys)}, MODEL)
    return website.id, keys


def crawl(conn: psycopg.Connection, website_id: int, reached: Iterable[int], gone: Iterable[int] = (),
          *, clean: bool = True) -> Retirement:
    """A crawl that reached `reached` (fetched) and `gone` (404) and nothing else, then ended."""
    started = conn.execute("SELECT now() AS t").fetchone()["t"]
    for i in reached:
        record(conn, website_id, i)
    for i in gone:
        record(conn, website_id, i, gone=True)
    return close_crawl(conn, website_id, started, clean=clean, policy=POLICY)


def live_pages(conn: psycopg.Connection) -> set[str]:
    return {r["url"] for r in conn.execute("SELECT url FROM pages WHERE document IS NOT NULL")}


def test_a_hold_is_confirmed_only_by_the_same_pages_missing_again(conn: psycopg.Connection) -> None:
    website_id, keys = make_site(conn)
    first = crawl(conn, website_id, reached=range(4, 10), gone=range(4))  # 4 of 10 > 30 %

    assert first.retired == [] and first.held_pages == sorted(keys[:4])
    assert first.held.startswith("retirement held: this crawl would retire 4 of 10 live pages")
    assert get_website(conn, website_id).retirement_hold == first.held
    failed = conn.execute("SELECT status, http_status, failure_reason FROM pages WHERE url = %s", (url(0),)).fetchone()
    assert failed["status"] == "failed" and failed["http_status"] == 404 and "retirement held" in failed["failure_reason"]

    # Another 4 pages are missing now (the first 4 came back): not the same pages, so no confirmation.
    second = crawl(conn, website_id, reached=[*range(4), *range(8, 10)], gone=range(4, 8))

    assert second.retired == [] and second.held_pages == sorted(keys[4:8])
    assert len(live_pages(conn)) == 10

    # The same 4 missing again, and one more: the held 4 are confirmed, the one more is within the guard.
    third = crawl(conn, website_id, reached=[*range(4), 9], gone=range(4, 9))

    assert sorted(third.retired) == sorted(keys[4:9]) and third.held is None
    assert live_pages(conn) == {url(i) for i in (0, 1, 2, 3, 9)}
    assert third.chunks_deleted == 5 * 2 and chunks_without_live_page(conn, None) == {}
    website = get_website(conn, website_id)
    assert website.retirement_hold is None


def test_confirmation_retires_only_the_held_pages_and_guards_the_rest(conn: psycopg.Connection) -> None:
    website_id, keys = make_site(conn)
    crawl(conn, website_id, reached=range(4, 10), gone=range(4))

    confirmed = crawl(conn, website_id, reached=range(8, 10), gone=range(8))  # the held 4 and 4 more

    assert sorted(confirmed.retired) == sorted(keys[:4])
    assert confirmed.held_pages == sorted(keys[4:8]) and "would retire 4 of 10" in confirmed.held
    assert live_pages(conn) == {url(i) for i in range(4, 10)}


def test_a_site_larger_than_max_pages_retires_unseen_pages_by_age(conn: psycopg.Connection) -> None:
    """Never-clean crawls (cut short by max_pages): page 0 is missed by every crawl, page 1 twice,
    then reached, then missed again; only page 0 goes, once 3 crawls over 14 days missed it."""
    website_id, keys = make_site(conn)
    for _ in range(3):
        kept = crawl(conn, website_id, reached=range(2, 10), clean=False)
        assert kept.retired == []  # three crawls, but all within a few seconds: not 14 days
    crawl(conn, website_id, reached=range(1, 10), clean=False)  # page 1 reached: its count starts again
    conn.execute("UPDATE pages SET unseen_since = unseen_since - interval '15 days' WHERE url = ANY(%s)",
                 ([url(0), url(1)],))
    unseen = {r["url"]: r["unseen_crawls"] for r in conn.execute("SELECT url, unseen_crawls FROM pages")}
    assert unseen[url(0)] == 4 and unseen[url(1)] == 0 and unseen[url(2)] == 0

    aged = crawl(conn, website_id, reached=range(2, 10), clean=False)

    assert aged.retired == [keys[0]]
    gone = conn.execute("SELECT status, failure_reason FROM pages WHERE url = %s", (url(0),)).fetchone()
    assert gone["status"] == "gone" and gone["failure_reason"].startswith("not reached by the last 5 crawls")
    assert url(1) in live_pages(conn)  # missed by one crawl since it was last reached


def test_ageing_pages_are_held_by_the_guard_until_the_same_pages_age_again(conn: psycopg.Connection) -> None:
    website_id, keys = make_site(conn)
    for _ in range(3):
        crawl(conn, website_id, reached=range(5, 10), clean=False)
    conn.execute("UPDATE pages SET unseen_since = unseen_since - interval '15 days'")

    held = crawl(conn, website_id, reached=range(5, 10), clean=False)  # 5 of 10 aged at once

    assert held.retired == [] and held.held_pages == sorted(keys[:5])
    confirmed = crawl(conn, website_id, reached=range(5, 10), clean=False)
    assert sorted(confirmed.retired) == sorted(keys[:5])


def test_a_url_that_never_had_text_is_gone_at_once_and_retires_nothing(conn: psycopg.Connection) -> None:
    website_id, _ = make_site(conn)
    outcome = crawl(conn, website_id, reached=range(10), gone=[99])
    assert outcome.retired == [] and outcome.candidates == 0
    assert conn.execute("SELECT status FROM pages WHERE url = %s", (url(99),)).fetchone()["status"] == "gone"
