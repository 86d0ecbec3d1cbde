"""crawl_website: robots.txt, sitemaps, then breadth-first links, yielding pages as they arrive.

Memory is bounded by `max_pages`: the frontier only takes URLs while
`queued + in flight + yielded < max_pages`, so the seen-set holds at most `max_pages` URLs (plus
redirect targets); page bodies are handed to the caller and dropped.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from urllib.parse import urlsplit

from pilito_pipeline.crawl.fetch import Fetcher, FetchError, HostThrottle, OpenResponse
from pilito_pipeline.crawl.html import HTML_CONTENT_TYPES, decode_html, extract_links, looks_like_html, media_type
from pilito_pipeline.crawl.models import CrawlConfig, CrawledPage, PageValidators
from pilito_pipeline.crawl.robots import ALLOW_ALL, ROBOTS_MAX_BYTES, RobotsRules, parse_robots, product_token
from pilito_pipeline.crawl.safety import check_url_safe
from pilito_pipeline.crawl.sitemaps import parse_sitemap
from pilito_pipeline.crawl.urls import SiteScope, normalize_url

logger = logging.getLogger(__name__)

KnownPages = Callable[[str], PageValidators | None]
VisitResult = tuple[CrawledPage, tuple[str, ...]]
"""A page and its in-scope links as the page spelled them."""


class CrawlAbortedError(RuntimeError):
    """The crawl could not start, so its (empty) result says nothing about the site's pages."""


def crawl_website(
    start_url: str,
    config: CrawlConfig,
    known_pages: KnownPages = lambda url: None,
) -> Iterator[CrawledPage]:
    """Crawl one website, yielding each page as soon as it is fetched.

    Raises UnsafeURLError at once when the start URL is unsafe (see `check_url_safe`).
    Raises CrawlAbortedError while iterating when the site's robots.txt cannot be read (5xx,
    429, network error: RFC 9309 then forbids crawling), and after the last page when no page
    at all was fetched or found unchanged (e.g. the home page answered 500): such a crawl says
    nothing about which pages the site still has, so it must not look like a complete one.
    `known_pages(normalised_url)` returns what the last crawl stored, for conditional requests;
    it is only called from the thread iterating this generator.
    """
    check_url_safe(start_url, config.allowed_hosts)
    return _Crawl(start_url, config, known_pages).pages()


class _Crawl:
    def __init__(self, start_url: str, config: CrawlConfig, known_pages: KnownPages) -> None:
        self.config = config
        self.known_pages = known_pages
        self.start_url = start_url.strip().split("#", 1)[0]
        self.start_key = normalize_url(self.start_url)
        self.scope = SiteScope.for_start_url(
            self.start_key, config.include_subdomains, config.include_patterns, config.exclude_patterns
        )
        self.throttle = HostThrottle(config.rate_limit_seconds)
        self.fetcher = Fetcher(config, self.throttle)
        self.robots: dict[str, RobotsRules] = {}
        self.robots_locks: dict[str, threading.Lock] = {}
        self.robots_guard = threading.Lock()
        self.seen: set[str] = set()
        self.frontier: deque[tuple[str, str, int]] = deque()
        self.claimed = 0
        """URLs queued, in flight or yielded; never more than max_pages."""
        self.reached = 0
        """Pages fetched or found unchanged."""

    # -- frontier -------------------------------------------------------------------------
    def enqueue(self, url: str, depth: int) -> None:
        if self.claimed >= self.config.max_pages or depth > self.config.max_depth:
            return
        try:
            key = normalize_url(url)
        except ValueError:
            return
        if key in self.seen or not self.scope.contains(key) or not self.robots_for(key).allows(key):
            return
        self.seen.add(key)
        self.frontier.append((url, key, depth))
        self.claimed += 1

    def pages(self) -> Iterator[CrawledPage]:
        self.seen.add(self.start_key)
        self.frontier.append((self.start_url, self.start_key, 0))
        self.claimed = 1
        workers = ThreadPoolExecutor(self.config.max_concurrency, thread_name_prefix="crawl")
        in_flight: dict[Future[VisitResult], str] = {}
        try:
            start_rules = self.robots_for(self.start_key)
            if start_rules.unreachable_reason:
                raise CrawlAbortedError(f"{start_rules.unreachable_reason}: nothing crawled")
            if self.config.max_depth >= 1:
                self.read_sitemaps(start_rules)
            while self.frontier or in_flight:
                self.keep_workers_busy(workers, in_flight)
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                finished = [self.accept(in_flight.pop(future), future.result()) for future in done]
                self.keep_workers_busy(workers, in_flight)  # fetch on while the caller handles pages
                for page in finished:
                    if page is not None:
                        self.reached += page.outcome in ("fetched", "not_modified")
                        yield page
            if not self.reached:
                raise CrawlAbortedError(f"no page of {self.start_key} could be fetched")
        finally:
            self.throttle.stop()  # workers waiting for their turn give up at once
            workers.shutdown(wait=False, cancel_futures=True)
            self.fetcher.close()

    def keep_workers_busy(self, workers: ThreadPoolExecutor, in_flight: dict[Future[VisitResult], str]) -> None:
        while self.frontier and len(in_flight) < self.config.max_concurrency:
            url, key, depth = self.frontier.popleft()
            in_flight[workers.submit(self.visit, url, key, depth, self.known_pages(key))] = key

    def accept(self, key: str, result: VisitResult) -> CrawledPage | None:
        """Queue a visited page's links; None for a redirect onto a page already seen."""
        page, link_urls = result
        if page.url != key:  # redirected: the page is known by where it landed
            if page.url in self.seen:
                self.claimed -= 1
                return None
            self.seen.add(page.url)
        for link in link_urls:
            self.enqueue(link, page.depth + 1)
        return page

    # -- robots.txt and sitemaps ----------------------------------------------------------
    def robots_for(self, key: str) -> RobotsRules:
        parts = urlsplit(key)
        origin = f"{parts.scheme}://{parts.netloc}"
        with self.robots_guard:
            rules = self.robots.get(origin)
            if rules is not None:
                return rules
            lock = self.robots_locks.setdefault(origin, threading.Lock())
        with lock:
            with self.robots_guard:
                rules = self.robots.get(origin)
            if rules is None:
                rules = self.fetch_robots(origin)
                if rules.crawl_delay is not None:
                    self.throttle.set_delay(parts.hostname or "", rules.crawl_delay)
                with self.robots_guard:
                    self.robots[origin] = rules
        return rules

    def fetch_robots(self, origin: str) -> RobotsRules:
        """RFC 9309: 4xx means no rules; 5xx, 429 or no answer means crawl nothing."""
        try:
            with self.fetcher.open(origin + "/robots.txt") as response:
                if response.status >= 500 or response.status == 429:
                    return RobotsRules(unreachable_reason=f"robots.txt unreachable (HTTP {response.status})")
                if not 200 <= response.status < 300:
                    return ALLOW_ALL
                body = response.read(ROBOTS_MAX_BYTES, allow_truncated=True)
        except FetchError as exc:
            return RobotsRules(unreachable_reason=f"robots.txt unreachable ({exc.reason})")
        return parse_robots(body.decode("utf-8", errors="replace"), self.config.user_agent)

    def read_sitemaps(self, rules: RobotsRules) -> None:
        """Queue page URLs from robots.txt's Sitemap lines and /sitemap.xml (indexes followed)."""
        start = urlsplit(self.start_key)
        pending = deque(dict.fromkeys([*rules.sitemaps, f"{start.scheme}://{start.netloc}/sitemap.xml"]))
        visited: set[str] = set()
        while pending and len(visited) < self.config.max_sitemaps and self.claimed < self.config.max_pages:
            sitemap_url = pending.popleft()
            if sitemap_url in visited:
                continue
            visited.add(sitemap_url)
            try:
                with self.fetcher.open(sitemap_url) as response:
                    if not 200 <= response.status < 300:
                        continue
                    body = response.read(self.config.max_body_bytes, allow_truncated=True)
            except FetchError as exc:
                logger.info("sitemap %s not read: %s", sitemap_url, exc.reason)
                continue
            entries = parse_sitemap(body, self.config.max_body_bytes, self.config.max_pages)
            pending.extend(entries.sitemaps)
            for page_url in entries.pages:
                self.enqueue(page_url, 1)

    # -- one page (runs on a worker thread) -----------------------------------------------
    def visit(self, url: str, key: str, depth: int, known: PageValidators | None) -> VisitResult:
        """The page, and its links as the page spelled them (fetched as written: a site's own
        spelling, e.g. a trailing slash, saves a redirect)."""
        try:
            return self.fetch_page(url, key, depth, known)
        except FetchError as exc:
            return _unread(CrawledPage(key, depth, exc.outcome, http_status=exc.http_status, reason=exc.reason), known)
        except Exception as exc:  # a bug or a parser surprise must cost one page, not the crawl
            logger.exception("crawling %s failed unexpectedly", key)
            page = CrawledPage(key, depth, "failed", reason=f"internal error: {type(exc).__name__}: {exc}")
            return _unread(page, known)

    def fetch_page(self, url: str, key: str, depth: int, known: PageValidators | None) -> VisitResult:
        """Fetch one page, conditionally where the last crawl stored validators, and read its HTML;
        the body is read only once the answer is an HTML page's, and dropped once decoded."""
        rules = self.robots_for(key)
        if not rules.allows(key):  # robots.txt changed or unreadable since the page was queued: not fetched
            page = CrawledPage(key, depth, "failed", reason=rules.unreachable_reason or "disallowed by robots.txt")
            return _unread(page, known)
        with self.fetcher.open(url, _conditional_headers(known), self.redirect_refusal) as response:
            answer = self.read_answer(response, depth, known)
            if not isinstance(answer, _HtmlAnswer):
                return answer
            body = response.read(self.config.max_body_bytes)
        if not answer.kind and not looks_like_html(body[:1024]):
            page = CrawledPage(answer.key, depth, "skipped", http_status=answer.status, reason="not HTML (no Content-Type)")
            return _unread(page, known)
        html = decode_html(body, answer.content_type)
        del body
        return self.html_page(html, answer, depth)

    def read_answer(self, response: OpenResponse, depth: int, known: PageValidators | None) -> VisitResult | _HtmlAnswer:
        """The page as far as the status and headers tell: unchanged (304), gone, failed, not HTML;
        else what `html_page` needs to read its body."""
        status = response.status
        final_key = normalize_url(response.url)
        etag, last_modified = response.header("ETag"), response.header("Last-Modified")
        if status == 304 and known is not None and (known.etag or known.last_modified):
            page = CrawledPage(
                final_key, depth, "not_modified", http_status=status,
                etag=etag or known.etag, last_modified=last_modified or known.last_modified,
                links=known.links, reason="unchanged since the last crawl (HTTP 304)",
            )  # fmt: skip
            return page, known.links
        if status in (404, 410):
            return CrawledPage(final_key, depth, "gone", http_status=status, reason=f"HTTP {status}"), ()
        if not 200 <= status < 300:
            return _unread(CrawledPage(final_key, depth, "failed", http_status=status, reason=f"HTTP {status}"), known)
        content_type = response.header("Content-Type")
        kind = media_type(content_type)
        if kind and kind not in HTML_CONTENT_TYPES:
            page = CrawledPage(
                final_key, depth, "skipped", http_status=status, content_type=content_type,
                reason=f"not HTML ({kind})",
            )  # fmt: skip
            return _unread(page, known)
        return _HtmlAnswer(
            final_key, status, content_type, kind, etag, last_modified, response.url,
            self.robots_header(response.header("X-Robots-Tag")),
        )

    def html_page(self, html: str, answer: _HtmlAnswer, depth: int) -> VisitResult:
        """A fetched page and its in-scope links, or `skipped` where it asks not to be indexed."""
        found = extract_links(html, answer.url)
        in_scope: dict[str, str] = {}  # normalised -> as written (first spelling wins)
        if not (found.nofollow or "nofollow" in answer.robots_header):
            for link in found.urls:
                link_key = _normalized_or_none(link)
                if link_key and link_key not in in_scope and self.scope.contains(link_key):
                    in_scope[link_key] = link
        links, link_urls = tuple(in_scope), tuple(in_scope.values())
        if found.noindex or "noindex" in answer.robots_header:
            page = CrawledPage(
                answer.key, depth, "skipped", http_status=answer.status, content_type=answer.content_type,
                etag=answer.etag, last_modified=answer.last_modified, links=links,
                reason="the page asks not to be indexed (noindex)",
            )  # fmt: skip
            return page, link_urls
        page = CrawledPage(
            answer.key, depth, "fetched", http_status=answer.status, html=html, content_type=answer.content_type,
            etag=answer.etag, last_modified=answer.last_modified, links=links,
        )  # fmt: skip
        return page, link_urls

    def redirect_refusal(self, target: str) -> str | None:
        """Why a redirect may not be followed (None: follow it). SSRF is checked by the fetcher."""
        key = _normalized_or_none(target)
        if key is None:
            return "not an http(s) URL"
        if not self.scope.same_site(key):
            return "outside the website"
        rules = self.robots_for(key)
        if not rules.allows(key):
            return rules.unreachable_reason or "disallowed by robots.txt"
        return None

    def robots_header(self, value: str | None) -> set[str]:
        """Directives of X-Robots-Tag meant for every crawler or for our product token."""
        directives: set[str] = set()
        ours = product_token(self.config.user_agent)
        for part in (value or "").lower().split(","):
            agent, _, directive = part.rpartition(":")
            if not agent.strip() or agent.strip() == ours:
                directives.add(directive.strip())
        return directives


@dataclasses.dataclass(frozen=True)
class _HtmlAnswer:
    """A 2xx answer that may be HTML, before its body is read."""

    key: str
    """The normalised URL answered (after redirects)."""
    status: int
    content_type: str | None
    kind: str | None
    """The media type, or None where the server sent none (the body's start decides)."""
    etag: str | None
    last_modified: str | None
    url: str
    """As answered: relative links resolve against it."""
    robots_header: set[str]


def _conditional_headers(known: PageValidators | None) -> dict[str, str]:
    """If-None-Match / If-Modified-Since from what the last crawl stored."""
    validators: dict[str, str] = {}
    if known and known.etag:
        validators["If-None-Match"] = known.etag
    if known and known.last_modified:
        validators["If-Modified-Since"] = known.last_modified
    return validators


def _unread(page: CrawledPage, known: PageValidators | None) -> VisitResult:
    """A page whose links could not be read this time (failed, or not HTML) contributes the links
    stored by the last crawl, as a 304 does: an outage on a hub page must not hide the pages below
    it, which would then look unlinked. A 404/410 page contributes none."""
    links = known.links if known is not None else ()
    return dataclasses.replace(page, links=links), links


def _normalized_or_none(url: str) -> str | None:
    try:
        return normalize_url(url)
    except ValueError:
        return None
