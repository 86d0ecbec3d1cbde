"""The bundled sample site served on loopback: pages, robots.txt and sitemap with the real host."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from xml.etree import ElementTree

import pytest

from pilito_pipeline.app.demo import SITE_DIR, DemoSiteServer, serve_demo_site


@pytest.fixture
def demo_site() -> Iterator[tuple[DemoSiteServer, str]]:
    server, base_url = serve_demo_site()
    yield server, base_url
    server.shutdown()


def fetch(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.status, response.headers["Content-Type"], response.read().decode("utf-8")


def test_pages_are_served(demo_site: tuple[DemoSiteServer, str]) -> None:
    _, base_url = demo_site
    assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/")
    status, content_type, body = fetch(base_url)
    assert status == 200 and content_type.startswith("text/html")
    assert "آموزشگاه زبان آوای نو" in body
    assert "\u200c" in fetch(base_url + "courses/ielts.html")[2]


def test_robots_and_sitemap_name_the_real_host(demo_site: tuple[DemoSiteServer, str]) -> None:
    _, base_url = demo_site
    _, content_type, robots = fetch(base_url + "robots.txt")
    assert content_type.startswith("text/plain")
    assert "Disallow: /admin/" in robots
    assert f"Sitemap: {base_url}sitemap.xml" in robots
    _, _, sitemap = fetch(base_url + "sitemap.xml")
    namespace = {"s": "http://www.sitemaps.org/schemas/sitemap/0.9"}
    locations = [loc.text for loc in ElementTree.fromstring(sitemap).iterfind("s:url/s:loc", namespace)]
    assert f"{base_url}courses/ielts.html" in locations
    assert all(location.startswith(base_url) for location in locations)
    assert not any("/admin/" in location for location in locations)
    for location in locations:
        assert (SITE_DIR / location.removeprefix(base_url)).is_file()


def test_missing_page_is_404(demo_site: tuple[DemoSiteServer, str]) -> None:
    _, base_url = demo_site
    with pytest.raises(urllib.error.HTTPError) as raised:
        fetch(base_url + "no-such-page.html")
    assert raised.value.code == 404


def test_deep_pages_are_only_linked_from_section_pages() -> None:
    index = (SITE_DIR / "index.html").read_text(encoding="utf-8")
    assert 'href="/courses.html"' in index and 'href="/blog/index.html"' in index
    for deep in ("/courses/ielts.html", "/blog/daily-habits.html", "/en/scholarships.html"):
        assert f'href="{deep}"' not in index
