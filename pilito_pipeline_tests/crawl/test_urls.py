"""URL normalisation table, numeric hosts, site scope and glob patterns."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pilito_pipeline.crawl import normalize_url
from pilito_pipeline.crawl.urls import SiteScope, parse_numeric_ipv4


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("HTTP://Example.COM/Path", "http://example.com/Path"),  # scheme and host case, path kept
        ("http://example.com", "http://example.com/"),
        ("http://example.com:80/a", "http://example.com/a"),  # default ports
        ("https://example.com:443/a", "https://example.com/a"),
        ("https://example.com:8443/a", "https://example.com:8443/a"),
        ("http://example.com/a#section", "http://example.com/a"),  # fragment
        ("http://example.com/a/", "http://example.com/a"),  # trailing slash
        ("http://example.com/a//", "http://example.com/a"),
        ("http://example.com/a/./b/../c", "http://example.com/a/c"),  # dot segments
        ("http://example.com/../a", "http://example.com/a"),
        ("http://example.com/?utm_source=x&utm_MEDIUM=y&gclid=1&fbclid=2&msclkid=3", "http://example.com/"),
        ("http://example.com/p?b=2&utm_campaign=z&a=1", "http://example.com/p?a=1&b=2"),  # sorted, tracking gone
        ("http://example.com/p?", "http://example.com/p"),
        ("http://example.com/p?q=a+b&flag", "http://example.com/p?flag&q=a+b"),
        ("http://example.com/%7euser/%2fx", "http://example.com/~user/%2Fx"),  # unreserved decoded, hex upper
        (
            "https://shop.ir/محصولات/کفش",
            "https://shop.ir/%D9%85%D8%AD%D8%B5%D9%88%D9%84%D8%A7%D8%AA/%DA%A9%D9%81%D8%B4",
        ),
        ("https://shop.ir/%d9%85%d8%ad", "https://shop.ir/%D9%85%D8%AD"),
        ("https://shop.ir/search?q=کفش", "https://shop.ir/search?q=%DA%A9%D9%81%D8%B4"),
        ("https://پیلیتو.ir/", "https://xn--pgb5cn7smob.ir/"),  # IDNA host
        ("http://Example.com./a", "http://example.com/a"),  # trailing dot on host
        ("http://user:secret@example.com/a", "http://example.com/a"),  # credentials never kept
        ("http://2130706433/", "http://127.0.0.1/"),  # numeric hosts spelled out
        ("http://0x7f.0.0.1:8080/", "http://127.0.0.1:8080/"),
        ("http://[::FFFF:7F00:1]/", "http://[::ffff:7f00:1]/"),
        ("  http://example.com/a  ", "http://example.com/a"),
    ],
)
def test_normalisation_table(raw: str, expected: str) -> None:
    assert normalize_url(raw) == expected
    assert normalize_url(expected) == expected  # idempotent


@pytest.mark.parametrize(
    "bad",
    ["mailto:a@b.c", "javascript:void(0)", "/relative", "ftp://example.com/", "http://", "http://example.com:99999/"],
)
def test_rejects_what_is_not_an_absolute_http_url(bad: str) -> None:
    with pytest.raises(ValueError):
        normalize_url(bad)


@pytest.mark.parametrize(
    ("host", "address"),
    [("2130706433", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"), ("0x7f.0.0.1", "127.0.0.1"),
     ("0x7f000001", "127.0.0.1"), ("127.1", "127.0.0.1"), ("127.0.1", "127.0.0.1"), ("10.0.0.1.", "10.0.0.1"),
     ("0", "0.0.0.0"), ("example.com", None), ("1.2.3.example", None)],
)  # fmt: skip
def test_numeric_hosts_are_read_like_browsers_do(host: str, address: str | None) -> None:
    parsed = parse_numeric_ipv4(host)
    assert (str(parsed) if parsed else None) == address


@pytest.mark.parametrize("host", ["256.0.0.1", "1.2.3.4.5", "4294967296", "08.0.0.1", "0x.1.2.3.4"])
def test_malformed_numeric_hosts_raise(host: str) -> None:
    with pytest.raises(ValueError):
        parse_numeric_ipv4(host)


def test_scope_same_site_www_subdomains_and_ports() -> None:
    scope = SiteScope.for_start_url("http://www.Example.com/start")
    assert scope.same_site("http://example.com/a")
    assert scope.same_site("https://www.example.com/a")  # http -> https upgrade stays in scope
    assert not scope.same_site("http://blog.example.com/a")
    assert not scope.same_site("http://example.com:8080/a")
    assert not scope.same_site("http://notexample.com/a")
    with_subdomains = SiteScope.for_start_url("http://example.com/", include_subdomains=True)
    assert with_subdomains.same_site("http://blog.example.com/a")
    assert not with_subdomains.same_site("http://badexample.com/a")


def test_patterns_are_globs_on_path_and_query() -> None:
    scope = SiteScope.for_start_url("http://example.com/", include_patterns=("/blog/*", "/fa/*"),
                                    exclude_patterns=("*.pdf", "*?print=*"))  # fmt: skip
    assert scope.contains("http://example.com/blog/a/b")
    assert scope.contains("http://example.com/fa/x")
    assert not scope.contains("http://example.com/shop")
    assert not scope.contains("http://example.com/blog/report.pdf")
    assert not scope.contains("http://example.com/blog/a?print=1")


_piece = st.sampled_from(list("abcXYZ09-._~%2Fسلام !$&'()*+,;=:@") + ["%7e", "%D8%B3", "..", "%2f", "%zz"])
_segment = st.lists(_piece, max_size=6).map("".join)
_parameter = st.tuples(
    st.sampled_from(["a", "B", "utm_x", "gclid", "q", "سوال", "a b"]), st.text(alphabet="xyz+%=20سﻻ", max_size=4)
)


@given(
    host=st.sampled_from(["Example.COM", "www.example.com", "127.1", "[::1]", "پیلیتو.ir", "a.b.example.org."]),
    port=st.sampled_from(["", ":80", ":443", ":8080"]),
    segments=st.lists(_segment, max_size=5),
    parameters=st.lists(_parameter, max_size=4),
    fragment=st.text(max_size=5),
    trailing_slash=st.booleans(),
)
def test_normalisation_is_idempotent(host: str, port: str, segments: list[str], parameters: list[tuple[str, str]],
                                     fragment: str, trailing_slash: bool) -> None:  # fmt: skip
    path = "/" + "/".join(segments) + ("/" if trailing_slash else "")
    query = "&".join(f"{name}={value}" for name, value in parameters)
    url = f"https://{host}{port}{path}" + (f"?{query}" if query else "") + (f"#{fragment}" if fragment else "")
    once = normalize_url(url)
    assert normalize_url(once) == once
    assert "#" not in once and "utm_" not in once and "gclid" not in once
    assert once.isascii()
