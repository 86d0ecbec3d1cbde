"""crawl_website against real HTTP sites served on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import gzip
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from pilito_pipeline.crawl import (
    CrawlAbortedError,
    CrawlConfig,
    CrawledPage,
    PageValidators,
    UnsafeURLError,
    crawl_website,
)
from pilito_pipeline.crawl.fetch import FetchError, HostThrottle

from .conftest import Response, SeenRequest, Site


def crawl(
    site: Site, config: CrawlConfig, start: str = "/", known: dict[str, PageValidators] | None = None
) -> dict[str, CrawledPage]:
    """Pages by path (with query)."""
    pages: dict[str, CrawledPage] = {}
    for page in crawl_website(site.url(start), config, lambda url: (known or {}).get(url)):
        parts = urlsplit(page.url)
        key = parts.path + (f"?{parts.query}" if parts.query else "")
        assert key not in pages, f"{key} yielded twice"
        pages[key] = page
    return pages


def page_requests(site: Site) -> list[str]:
    return [path for path in site.paths() if path not in ("/robots.txt", "/sitemap.xml")]


def test_breadth_first_crawl_yields_every_reachable_page(site: Site, config: CrawlConfig) -> None:
    site.page("/", ["/a", "/b#section", "b", f"{site.url('/a')}?utm_source=news", "mailto:x@example.com"])
    site.page("/a", ["/", "/a/deep/"])
    site.page("/b", ["/a"])
    site.page("/a/deep/", ["https://elsewhere.example/"])

    pages = crawl(site, config)

    assert set(pages) == {"/", "/a", "/b", "/a/deep"}
    assert all(page.outcome == "fetched" and page.http_status == 200 for page in pages.values())
    assert [pages[p].depth for p in ("/", "/a", "/b", "/a/deep")] == [0, 1, 1, 2]
    assert pages["/"].links == (site.url("/a"), site.url("/b"))  # normalised, de-duplicated, in scope
    assert "/a/deep" in pages["/a/deep"].html
    assert sorted(page_requests(site)) == ["/", "/a", "/a/deep/", "/b"]  # each page requested once


def test_robots_rules_for_our_agent_and_crawl_delay_spacing(site: Site, config: CrawlConfig) -> None:
    site.add(
        "/robots.txt",
        "User-agent: *\nDisallow: /\n\n"
        "User-agent: PilitoBot\nDisallow: /private\nAllow: /private/open\nCrawl-delay: 1\n",
        content_type="text/plain",
    )
    links = ["/private", "/private/secret", "/private/open", "/p1", "/p2", "/p3", "/p4"]
    site.page("/", links)
    for link in links:
        site.page(link)

    pages = crawl(site, dataclasses.replace(config, max_concurrency=4))

    assert set(pages) == {"/", "/private/open", "/p1", "/p2", "/p3", "/p4"}
    assert not site.hits("/private") and not site.hits("/private/secret")
    arrivals = [request.at for request in site.requests if request.path != "/robots.txt"]
    gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:], strict=False)]
    # Crawl-delay beats rate_limit_seconds=0, even with 4 workers (which would otherwise arrive together).
    # The crawler spaces request *starts* by 1 s; arrivals here can lag their start by scheduling jitter
    # on a loaded machine, so a gap is only bounded by half the delay.
    assert len(gaps) >= 5 and min(gaps) >= 0.5, gaps


def test_robots_unreachable_means_crawl_nothing(site: Site, config: CrawlConfig) -> None:
    site.add("/robots.txt", "busy", status=500, content_type="text/plain")
    site.page("/", ["/a"])

    with pytest.raises(CrawlAbortedError, match=r"robots.txt unreachable \(HTTP 500\)"):
        crawl(site, dataclasses.replace(config, max_retries=0))

    assert site.paths() == ["/robots.txt"]


def test_sitemap_index_from_robots_and_default_sitemap(site: Site, config: CrawlConfig) -> None:
    site.add("/robots.txt", f"Sitemap: {site.url('/sitemap_index.xml')}\n", content_type="text/plain")
    site.add(
        "/sitemap_index.xml",
        '<?xml version="1.0"?><sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
        f"<sitemap><loc>{site.url('/posts.xml.gz')}</loc></sitemap>"
        f"<sitemap><loc>{site.url('/pages.xml')}</loc></sitemap></sitemapindex>",
        content_type="application/xml",
    )

    def urlset(*locations: str) -> str:
        entries = "".join(f"<url><loc>{location}</loc></url>" for location in locations)
        return f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{entries}</urlset>'

    site.add("/posts.xml.gz", gzip.compress(urlset(site.url("/orphan-post")).encode()), content_type="application/gzip")
    site.add("/pages.xml", urlset(site.url("/orphan-page"), "https://other.example/x"), content_type="text/xml")
    site.add("/sitemap.xml", urlset(site.url("/from-default")), content_type="text/xml")
    site.page("/")
    for path in ("/orphan-post", "/orphan-page", "/from-default"):
        site.page(path)

    pages = crawl(site, config)

    assert set(pages) == {"/", "/orphan-post", "/orphan-page", "/from-default"}
    assert pages["/orphan-post"].depth == 1


def test_depth_and_page_limits(site: Site, config: CrawlConfig) -> None:
    for level in range(5):
        site.page(f"/d{level}", [f"/d{level + 1}"])
    assert set(crawl(site, dataclasses.replace(config, max_depth=2), start="/d0")) == {"/d0", "/d1", "/d2"}
    assert not site.hits("/d3")

    site.page("/", [f"/n{i}" for i in range(30)])
    for i in range(30):
        site.page(f"/n{i}", [f"/m{i}"])
    site.requests.clear()
    pages = crawl(site, dataclasses.replace(config, max_pages=5))
    assert len(pages) == 5 and "/" in pages
    assert len(page_requests(site)) == 5


def test_include_and_exclude_globs(site: Site, config: CrawlConfig) -> None:
    site.page("/", ["/blog/one", "/blog/drafts/two", "/shop/item", "/blog/three?page=2"])
    for path in ("/blog/one", "/blog/drafts/two", "/shop/item", "/blog/three"):
        site.page(path)

    limited = dataclasses.replace(config, include_patterns=("/blog/*",), exclude_patterns=("*/drafts/*",))
    pages = crawl(site, limited)

    assert set(pages) == {"/", "/blog/one", "/blog/three?page=2"}
    assert pages["/"].links == (site.url("/blog/one"), site.url("/blog/three?page=2"))


def test_429_then_success_honours_retry_after(site: Site, config: CrawlConfig) -> None:
    answers = iter([Response(429, {"Retry-After": "1", "Content-Type": "text/plain"}, b"slow down")])

    def busy_once(request: SeenRequest) -> Response:
        return next(answers, Response(body=b"<html><body>finally</body></html>"))

    site.route("/", busy_once)

    pages = crawl(site, config)

    assert pages["/"].outcome == "fetched" and "finally" in (pages["/"].html or "")
    first, second = site.hits("/")
    assert second.at - first.at >= 0.95


def test_retry_after_beyond_the_limit_fails_the_page(site: Site, config: CrawlConfig) -> None:
    site.page("/", ["/busy"])
    site.add("/busy", "later", status=503, headers={"Retry-After": "3600"})
    pages = crawl(site, config)
    assert pages["/busy"].outcome == "failed" and "3600s" in (pages["/busy"].reason or "")
    assert len(site.hits("/busy")) == 1


def test_redirects_loops_limits_and_scope(site: Site, config: CrawlConfig) -> None:
    site.page("/", ["/loop-a", "/chain0", "/moved", "/away"])
    site.redirect("/loop-a", "/loop-b")
    site.redirect("/loop-b", site.url("/loop-a"))
    for i in range(7):
        site.redirect(f"/chain{i}", f"/chain{i + 1}")
    site.redirect("/moved", "/new-home", status=308)
    site.page("/new-home")
    site.redirect("/away", f"http://localhost:{site.port}/")  # another host: out of scope

    pages = crawl(site, dataclasses.replace(config, max_redirects=5))

    assert pages["/loop-a"].outcome == "failed" and "redirect loop" in (pages["/loop-a"].reason or "")
    assert pages["/chain0"].outcome == "failed" and "too many redirects" in (pages["/chain0"].reason or "")
    assert len(site.hits("/chain5")) == 1 and not site.hits("/chain6")
    assert pages["/new-home"].outcome == "fetched" and "/moved" not in pages
    assert pages["/away"].outcome == "skipped" and "outside the website" in (pages["/away"].reason or "")


def _endless(chunk: bytes = b"x" * 65536) -> Iterator[bytes]:
    for _ in range(800):  # 50 MiB
        yield chunk


def test_huge_bodies_are_refused_without_reading_them(site: Site, config: CrawlConfig) -> None:
    fifty_mb = str(800 * 65536)
    site.page("/", ["/declared", "/streamed"])
    site.route(
        "/declared",
        lambda r: Response(headers={"Content-Type": "text/html", "Content-Length": fifty_mb}, body=_endless()),
    )
    site.route("/streamed", lambda r: Response(headers={"Content-Type": "text/html"}, body=_endless()))

    pages = crawl(site, dataclasses.replace(config, max_body_bytes=1_000_000))

    assert pages["/declared"].outcome == "skipped" and "Content-Length" in (pages["/declared"].reason or "")
    assert pages["/streamed"].outcome == "skipped" and "more than 1000000 bytes" in (pages["/streamed"].reason or "")
    assert site.bytes_sent["/declared"] < 20_000_000
    assert site.bytes_sent["/streamed"] < 20_000_000


def test_non_html_is_skipped_and_broken_html_still_crawled(site: Site, config: CrawlConfig) -> None:
    site.page("/", ["/report.pdf", "/broken", "/untyped"])
    site.add("/report.pdf", b"%PDF-1.7 \x00\x01\x02", content_type="application/pdf")
    site.add(
        "/broken", '<html><body><div><p>unclosed <a href="/ok">ok<table><tr><td><a href=/ok2>x</div></span>< <<>>&&;'
    )
    site.add("/untyped", b"\x89PNG\r\n\x1a\n\x00\x00", content_type="")
    site.page("/ok")
    site.page("/ok2")

    pages = crawl(site, config)

    assert pages["/report.pdf"].outcome == "skipped" and pages["/report.pdf"].reason == "not HTML (application/pdf)"
    assert pages["/report.pdf"].html is None
    assert pages["/broken"].outcome == "fetched"
    assert pages["/broken"].links == (site.url("/ok"), site.url("/ok2"))
    assert pages["/untyped"].outcome == "skipped"
    assert pages["/ok2"].outcome == "fetched"


def test_windows_1256_page_is_decoded(site: Site, config: CrawlConfig) -> None:
    # Persian as windows-1256 pages carry it: Arabic yeh and kaf (cp1256 has no Farsi yeh/keheh)
    text = "سلام، به فروشگاه ما خوش آمديد. گارانتي اصالت كالا و ارسال رايگان."
    html = (
        '<html><head><meta http-equiv="Content-Type" content="text/html; charset=windows-1256"></head>'
        f"<body><p>{text}</p></body></html>"
    )
    site.add("/", html.encode("cp1256"), content_type="text/html")

    pages = crawl(site, config)

    assert text in (pages["/"].html or "")


def test_recrawl_sends_validators_and_304_keeps_feeding_frontier(site: Site, config: CrawlConfig) -> None:
    def conditional(request: SeenRequest) -> Response:
        if request.headers.get("If-None-Match") == '"v1"':
            return Response(304, {"ETag": '"v1"'}, b"")
        return Response(body=b"<html><body>changed</body></html>")

    site.route("/", conditional)
    site.page("/only-known-from-last-crawl")
    known = {
        site.url("/"): PageValidators(
            '"v1"', "Wed, 01 Jan 2025 00:00:00 GMT", (site.url("/only-known-from-last-crawl"),)
        ),
    }

    pages = crawl(site, config, known=known)

    assert pages["/"].outcome == "not_modified" and pages["/"].http_status == 304
    assert pages["/"].etag == '"v1"' and pages["/"].html is None
    assert pages["/only-known-from-last-crawl"].outcome == "fetched"
    (request,) = site.hits("/")
    assert request.headers["If-None-Match"] == '"v1"'
    assert request.headers["If-Modified-Since"] == "Wed, 01 Jan 2025 00:00:00 GMT"


def test_missing_pages_are_gone(site: Site, config: CrawlConfig) -> None:
    site.page("/", ["/deleted", "/never-existed", "/error"])
    site.add("/deleted", "gone", status=410)
    site.add("/error", "oops", status=500)

    pages = crawl(site, dataclasses.replace(config, max_retries=0))

    assert pages["/"].outcome == "fetched"
    assert (pages["/deleted"].outcome, pages["/deleted"].http_status) == ("gone", 410)
    assert (pages["/never-existed"].outcome, pages["/never-existed"].http_status) == ("gone", 404)
    assert (pages["/error"].outcome, pages["/error"].reason) == ("failed", "HTTP 500")


def test_a_crawl_that_reaches_no_page_is_aborted_after_reporting_it(site: Site, config: CrawlConfig) -> None:
    site.add("/", "maintenance", status=500)
    pages = crawl_website(site.url("/"), dataclasses.replace(config, max_retries=0))

    first = next(pages)
    assert (first.outcome, first.reason) == ("failed", "HTTP 500")
    with pytest.raises(CrawlAbortedError, match="no page .* could be fetched"):
        next(pages)


def test_noindex_page_is_skipped_but_its_links_followed(site: Site, config: CrawlConfig) -> None:
    site.add("/", '<html><head><meta name="robots" content="noindex"></head><body><a href="/next">n</a></body></html>')
    site.page("/next", ["/hidden"])
    site.add("/hidden", "<html><body>x</body></html>", headers={"X-Robots-Tag": "noindex, nofollow"})

    pages = crawl(site, config)

    assert pages["/"].outcome == "skipped" and "noindex" in (pages["/"].reason or "")
    assert pages["/next"].outcome == "fetched"
    assert pages["/hidden"].outcome == "skipped" and pages["/hidden"].links == ()


def test_unsafe_start_url_is_refused_before_any_request(site: Site) -> None:
    with pytest.raises(UnsafeURLError, match="loopback"):
        crawl_website(site.url("/"), CrawlConfig())  # default allow-list: loopback refused
    assert site.paths() == []


def test_redirect_to_cloud_metadata_is_refused(site: Site, config: CrawlConfig) -> None:
    site.page("/", ["/meta", "/decimal"])
    site.redirect("/meta", "http://169.254.169.254/latest/meta-data/")
    site.redirect("/decimal", "http://2852039166/latest/meta-data/")  # 169.254.169.254 as one number

    pages = crawl(site, config)

    for path in ("/meta", "/decimal"):
        assert pages[path].outcome == "failed"
        assert "169.254.169.254 is not a public address" in (pages[path].reason or "")


def test_stopping_early_releases_waiting_workers(site: Site, config: CrawlConfig) -> None:
    site.add("/robots.txt", "User-agent: *\nCrawl-delay: 1\n", content_type="text/plain")
    site.page("/", [f"/p{i}" for i in range(50)])
    for i in range(50):
        site.page(f"/p{i}")
    pages = crawl_website(site.url("/"), dataclasses.replace(config, max_concurrency=4))
    first = next(pages)  # a second after robots.txt; 4 workers now wait 1, 2, 3, 4 s for their turns
    pages.close()  # type: ignore[attr-defined]
    deadline = time.monotonic() + 120  # generous: only a loaded machine's slowness, never a pass condition
    while any(thread.name.startswith("crawl") for thread in threading.enumerate()):
        assert time.monotonic() < deadline, "crawl workers still running after the crawl was closed"
        time.sleep(0.02)
    assert first.outcome == "fetched"
    assert [path for path in site.paths() if path.startswith("/p")] == []  # no request after stopping


def test_a_stopped_throttle_wakes_its_waiting_workers() -> None:
    """The next turn is an hour away: a worker that returns within the (generous) join deadline was
    woken by `stop()`, not left to sleep. (If `stop()` comes first, the wait ends at once just the same.)"""
    throttle = HostThrottle(default_delay=3600)
    throttle.wait_turn("example.com")  # the first request to a host does not wait
    reasons: list[str] = []

    def second_request() -> None:
        try:
            throttle.wait_turn("example.com")
        except FetchError as exc:
            reasons.append(exc.reason)

    worker = threading.Thread(target=second_request)
    worker.start()
    throttle.stop()
    worker.join(timeout=300)
    assert not worker.is_alive()
    assert reasons == ["crawl stopped before this request"]
