"""The crawler's options and results."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Outcome = Literal["fetched", "not_modified", "skipped", "failed", "gone"]


@dataclass(frozen=True)
class CrawlConfig:
    """Every crawl option, with its default, in one place.

    `include_patterns` / `exclude_patterns` are shell-style globs matched against the URL's path
    plus `?query` (`/blog/*`, `*.pdf`); the start URL is always fetched. Sitemap URLs count as
    depth 1. `allowed_hosts` exempts host names, IPs or CIDRs from the SSRF guard.
    """

    max_pages: int = 200
    max_depth: int = 5
    include_patterns: tuple[str, ...] = ()
    exclude_patterns: tuple[str, ...] = ()
    include_subdomains: bool = False
    rate_limit_seconds: float = 0.5
    """Minimum spacing between requests to one host; robots.txt Crawl-delay raises it."""
    max_concurrency: int = 4
    timeout_seconds: float = 15
    """Bounds connecting, each read, and the whole download of one response."""
    max_redirects: int = 5
    max_body_bytes: int = 5_000_000
    user_agent: str = "PilitoBot/0.1 (+https://pilito.com/bot)"
    allowed_hosts: tuple[str, ...] = ()
    max_retries: int = 3
    """Retries of one request answered 429/503 (waiting Retry-After, else exponential backoff)."""
    max_retry_after_seconds: float = 120
    """A longer Retry-After fails the page instead of stalling the crawl."""
    max_sitemaps: int = 20
    """Sitemap documents (indexes included) read per crawl."""

    def __post_init__(self) -> None:
        for name in ("max_pages", "max_concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"CrawlConfig.{name} must be at least 1")
        for name in ("max_depth", "max_redirects", "max_retries", "max_sitemaps"):
            if getattr(self, name) < 0:
                raise ValueError(f"CrawlConfig.{name} must not be negative")
        if self.rate_limit_seconds < 0 or self.timeout_seconds <= 0 or self.max_body_bytes <= 0:
            raise ValueError("CrawlConfig rate limit must be >= 0, timeout and max_body_bytes > 0")
        if not self.user_agent.strip():
            raise ValueError("CrawlConfig.user_agent must not be empty")


@dataclass(frozen=True)
class PageValidators:
    """What was stored about a URL: validators for a conditional request (only while its document
    is stored), and its last known links, so that an unchanged (304) page, or one that could not
    be read this time (5xx, network error, not HTML), keeps feeding the frontier."""

    etag: str | None
    last_modified: str | None
    links: tuple[str, ...] = ()


@dataclass(frozen=True)
class CrawledPage:
    """One URL's result; `reason` says why it was skipped, failed or gone (never secrets).

    `failed`: the page's state is unknown this time (5xx, network error, robots.txt unreadable).
    `skipped`: the page answered but must not be indexed (noindex, not HTML, too large, redirected
    away). `links` are the links the page contributes: its own when read, else the last known ones.
    """

    url: str
    depth: int
    outcome: Outcome
    http_status: int | None = None
    html: str | None = None
    content_type: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    links: tuple[str, ...] = ()
    reason: str | None = None
