"""Fetch a website politely and safely: robots.txt, sitemaps, breadth-first links, per-host rate
limits, conditional re-crawls, bounded bodies and an SSRF guard. Knows nothing of text or embeddings."""

from pilito_pipeline.crawl.crawler import CrawlAbortedError, crawl_website
from pilito_pipeline.crawl.models import CrawlConfig, CrawledPage, Outcome, PageValidators
from pilito_pipeline.crawl.safety import UnsafeURLError, check_url_safe
from pilito_pipeline.crawl.urls import normalize_url

__all__ = [
    "CrawlAbortedError",
    "CrawlConfig",
    "CrawledPage",
    "Outcome",
    "PageValidators",
    "UnsafeURLError",
    "check_url_safe",
    "crawl_website",
    "normalize_url",
]
