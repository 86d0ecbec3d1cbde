"""Sitemap parsing: urlset, index, gzip, damage and bombs."""

from __future__ import annotations

import gzip

from pilito_pipeline.crawl.sitemaps import parse_sitemap

NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'


def urlset(count: int) -> bytes:
    entries = "".join(f"<url><loc> https://e.com/p{i} </loc><lastmod>2025-01-01</lastmod></url>" for i in range(count))
    return f'<?xml version="1.0" encoding="UTF-8"?><urlset {NS}>{entries}</urlset>'.encode()


def test_urlset_and_index() -> None:
    assert parse_sitemap(urlset(3), 10_000, 100).pages == ["https://e.com/p0", "https://e.com/p1", "https://e.com/p2"]
    index = f"<sitemapindex {NS}><sitemap><loc>https://e.com/a.xml</loc></sitemap></sitemapindex>".encode()
    entries = parse_sitemap(index, 10_000, 100)
    assert entries.sitemaps == ["https://e.com/a.xml"] and entries.pages == []


def test_stops_at_max_pages_and_reads_gzip() -> None:
    assert len(parse_sitemap(gzip.compress(urlset(5000)), 10_000_000, 50).pages) == 50


def test_truncated_and_broken_documents_keep_what_was_read() -> None:
    body = urlset(10)
    assert len(parse_sitemap(body[: len(body) // 2], 10_000, 100).pages) >= 3
    assert parse_sitemap(b"<html>not a sitemap", 10_000, 100).pages == []


def test_entity_bombs_and_gzip_bombs_stay_small() -> None:
    bomb = (b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
            b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>'
            b"<urlset><url><loc>https://e.com/&d;</loc></url></urlset>")  # fmt: skip
    assert all(len(page) < 100 for page in parse_sitemap(bomb, 10_000, 100).pages)
    gzip_bomb = gzip.compress(b"<urlset>" + b" " * 50_000_000)
    assert parse_sitemap(gzip_bomb, 1_000_000, 100).pages == []
