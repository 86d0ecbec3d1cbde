"""Charset detection and link extraction."""

from __future__ import annotations

from pilito_pipeline.crawl.html import decode_html, extract_links, looks_like_html

PERSIAN_1256 = (
    "فروشگاه اينترنتي ما با بيش از ده سال سابقه، كالاي اصل با گارانتي معتبر و ارسال سريع به سراسر كشور ارائه مي‌دهد."
)
PERSIAN = "فروشگاه اینترنتی ما با بیش از ده سال سابقه، کالای اصل با گارانتی معتبر ارائه می‌دهد."


def test_header_charset_first() -> None:
    body = f"<p>{PERSIAN_1256}</p>".encode("cp1256")
    assert PERSIAN_1256 in decode_html(body, "text/html; charset=windows-1256")


def test_meta_charset_when_the_header_has_none_or_is_wrong() -> None:
    body = f'<html><head><meta charset="windows-1256"></head><body>{PERSIAN_1256}</body></html>'.encode("cp1256")
    assert PERSIAN_1256 in decode_html(body, "text/html")
    assert PERSIAN_1256 in decode_html(body, "text/html; charset=utf-8")  # bytes are not UTF-8: header skipped


def test_detection_without_any_declaration() -> None:
    body = f"<html><body><p>{PERSIAN_1256}</p><p>{PERSIAN_1256}</p></body></html>".encode("cp1256")
    assert PERSIAN_1256 in decode_html(body, None)
    assert PERSIAN in decode_html(f"<p>{PERSIAN}</p>".encode(), None)


def test_bom_wins() -> None:
    assert decode_html("\ufeff<p>سلام</p>".encode("utf-8"), "text/html; charset=windows-1256") == "<p>سلام</p>"


def test_links_base_nofollow_and_refresh() -> None:
    html = """<html><head><base href="https://example.com/docs/">
      <meta http-equiv="refresh" content="5; url=/moved"></head><body>
      <a href="intro">i</a> <a href="../about#team">a</a> <a href="#top">t</a>
      <a href="login" rel="nofollow">l</a> <a href="mailto:x@y.z">m</a> <a href="javascript:go()">j</a>
      <area href="/map"> <a href="http://[bad">b</a> <a href="  /spaced  ">s</a></body></html>"""
    links = extract_links(html, "https://example.com/page")
    assert links.urls == [
        "https://example.com/moved",
        "https://example.com/docs/intro",
        "https://example.com/about",
        "https://example.com/map",
        "https://example.com/spaced",
    ]
    assert not links.nofollow and not links.noindex


def test_meta_robots() -> None:
    links = extract_links('<meta name="robots" content="noindex, nofollow"><a href="/x">x</a>', "https://e.com/")
    assert links.noindex and links.nofollow and links.urls == []
    assert extract_links('<meta name="ROBOTS" content="none">', "https://e.com/").noindex


def test_xhtml_with_xml_declaration_and_broken_markup() -> None:
    html = '<?xml version="1.0" encoding="utf-8"?><html><body><div><a href="/a">a<table><a href=/b>b</span></<<'
    assert extract_links(html, "https://e.com/").urls == ["https://e.com/a", "https://e.com/b"]


def test_sniffing_untyped_bodies() -> None:
    assert looks_like_html(b"\n  <!DOCTYPE html><html>")
    assert not looks_like_html(b"%PDF-1.7")
