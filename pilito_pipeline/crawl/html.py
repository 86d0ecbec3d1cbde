"""What the crawler needs from an HTML page: its text (charset detected) and its links."""

from __future__ import annotations

import codecs
import contextlib
import re
from dataclasses import dataclass, field
from urllib.parse import urljoin

import charset_normalizer
from lxml import etree

HTML_CONTENT_TYPES = frozenset({"text/html", "application/xhtml+xml"})

_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_HEADER_CHARSET = re.compile(r"""charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_WHATWG_ALIASES = {"iso-8859-1": "windows-1252", "latin1": "windows-1252", "us-ascii": "windows-1252",
                   "ascii": "windows-1252", "x-cp1256": "windows-1256"}  # fmt: skip
META_SNIFF_BYTES = 4096
DETECTION_SAMPLE_BYTES = 256_000


def media_type(content_type: str | None) -> str:
    """`text/html; charset=utf-8` -> `text/html`."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def looks_like_html(body_start: bytes) -> bool:
    """Sniff a body without Content-Type (WHATWG-style: a tag at the start)."""
    head = body_start.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<!--", b"<?xml"))


def decode_html(body: bytes, content_type: str | None = None) -> str:
    """Decode a page: BOM, then the header charset, then `<meta charset>`, then detection
    (charset-normalizer). A declared charset the bytes do not fit is skipped, not trusted."""
    for bom, encoding in _BOMS:
        if body.startswith(bom):
            return body[len(bom) :].decode(encoding, errors="replace")
    header = _HEADER_CHARSET.search(content_type or "")
    meta = _META_CHARSET.search(body[:META_SNIFF_BYTES])
    declared = [header.group(1)] if header else []
    if meta:
        declared.append(meta.group(1).decode("ascii", errors="replace"))
    for label in declared:
        text = _decode_strict(body, label)
        if text is not None:
            return text
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        pass
    best = charset_normalizer.from_bytes(body[:DETECTION_SAMPLE_BYTES]).best()
    if best is not None:
        return body.decode(best.encoding, errors="replace")
    return body.decode("utf-8", errors="replace")


def _decode_strict(body: bytes, label: str) -> str | None:
    label = _WHATWG_ALIASES.get(label.strip().lower(), label.strip().lower())
    try:
        return body.decode(codecs.lookup(label).name)
    except (LookupError, UnicodeDecodeError):
        return None


@dataclass
class PageLinks:
    """Absolute out-links (fragments removed, not yet normalised) and the page's robots meta."""

    urls: list[str] = field(default_factory=list)
    nofollow: bool = False
    noindex: bool = False


class _LinkCollector:
    """lxml parser target: sees start tags only, builds no tree (fast, little memory)."""

    def __init__(self) -> None:
        self.base: str | None = None
        self.hrefs: list[str] = []
        self.robots: set[str] = set()

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        if tag in ("a", "area"):
            href = attrib.get("href")
            if href and "nofollow" not in (attrib.get("rel") or "").lower().split():
                self.hrefs.append(href)
        elif tag == "base" and self.base is None and attrib.get("href"):
            self.base = attrib["href"]
        elif tag == "meta":
            name = (attrib.get("name") or "").strip().lower()
            if name in ("robots", "pilitobot"):
                self.robots.update(token.strip() for token in (attrib.get("content") or "").lower().split(","))
            elif (attrib.get("http-equiv") or "").strip().lower() == "refresh":
                match = re.search(r"url\s*=\s*['\"]?([^'\"]+)", attrib.get("content") or "", re.IGNORECASE)
                if match:
                    self.hrefs.append(match.group(1).strip())

    def close(self) -> None:
        return None


def extract_links(html: str, page_url: str) -> PageLinks:
    """Links to follow from a page (honours `<base href>`, `rel=nofollow`, meta robots)."""
    collector = _LinkCollector()
    parser = etree.HTMLParser(target=collector, no_network=True)
    try:
        parser.feed(html)
        parser.close()
    except etree.LxmlError:
        pass  # broken markup: keep whatever links were seen before the parser gave up
    base = page_url
    if collector.base:
        with contextlib.suppress(ValueError):  # a malformed <base href> is ignored
            base = urljoin(page_url, collector.base.strip())
    nofollow = bool(collector.robots & {"nofollow", "none"})
    noindex = bool(collector.robots & {"noindex", "none"})
    urls: list[str] = []
    if not nofollow:
        for href in collector.hrefs:
            href = href.strip()
            if not href or href.startswith("#"):
                continue
            try:
                absolute = urljoin(base, href).split("#", 1)[0]
            except ValueError:  # e.g. a malformed IPv6 literal
                continue
            if absolute.startswith(("http://", "https://")):
                urls.append(absolute)
    return PageLinks(urls=list(dict.fromkeys(urls)), nofollow=nofollow, noindex=noindex)
