"""Sitemaps (urlset and sitemap index, plain or gzipped), read without trusting their size."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from lxml import etree

GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class SitemapEntries:
    """`<loc>`s of one sitemap document: pages (urlset) or further sitemaps (sitemapindex)."""

    pages: list[str] = field(default_factory=list)
    sitemaps: list[str] = field(default_factory=list)


def parse_sitemap(body: bytes, max_bytes: int, max_pages: int) -> SitemapEntries:
    """Locations in a sitemap, stopping after `max_pages` page URLs.

    A gzipped body is inflated to at most `max_bytes`; a truncated or broken document yields the
    locations read before the damage. Entities are not resolved (no XML bombs, no network).
    """
    if body.startswith(GZIP_MAGIC):
        inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
        try:
            body = inflater.decompress(body, max_bytes)
        except zlib.error:
            return SitemapEntries()
    entries = SitemapEntries()
    parser = etree.XMLPullParser(events=("end",), resolve_entities=False, no_network=True, huge_tree=False)
    try:
        for start in range(0, len(body), 65536):
            parser.feed(body[start : start + 65536])
            if _collect(parser, entries, max_pages):
                return entries
        parser.close()
    except etree.LxmlError:
        pass
    _collect(parser, entries, max_pages)
    return entries


def _collect(parser: etree.XMLPullParser, entries: SitemapEntries, max_pages: int) -> bool:
    """Move finished `<loc>`s into `entries`; True once enough pages were read."""
    for _event, element in parser.read_events():
        if etree.QName(element).localname != "loc":
            continue
        location = (element.text or "").strip()
        parent = element.getparent()
        if location and parent is not None:
            kind = etree.QName(parent).localname
            if kind == "url":
                entries.pages.append(location)
            elif kind == "sitemap":
                entries.sitemaps.append(location)
        _release(element)
        if len(entries.pages) >= max_pages:
            return True
    return False


def _release(element: etree._Element) -> None:
    """Free parsed siblings so a large sitemap does not build a whole tree in memory."""
    parent = element.getparent()
    grandparent = parent.getparent() if parent is not None else None
    if grandparent is not None:
        while parent.getprevious() is not None:
            del grandparent[0]
