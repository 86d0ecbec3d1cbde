"""robots.txt parsing as RFC 9309 specifies it."""

from __future__ import annotations

from pilito_pipeline.crawl.robots import parse_robots, product_token

AGENT = "PilitoBot/0.1 (+https://pilito.com/bot)"

ROBOTS = """
# comments and unknown lines are ignored
User-agent: Googlebot
Disallow: /

User-agent: *
Disallow: /admin
Crawl-delay: 9

user-agent: pilitobot
user-agent: OtherBot
Disallow: /private/
Allow: /private/public-page
Disallow: /*.pdf$
Disallow: /search*q=
Allow: /shop/$
Disallow: /shop/
Crawl-delay: 2.5

Sitemap: https://example.com/sitemap_index.xml
Sitemap: https://example.com/news.xml
"""


def test_our_group_is_chosen_over_the_wildcard() -> None:
    rules = parse_robots(ROBOTS, AGENT)
    assert rules.crawl_delay == 2.5
    assert rules.allows("https://example.com/admin")  # only the * group disallows it
    assert rules.sitemaps == ("https://example.com/sitemap_index.xml", "https://example.com/news.xml")


def test_longest_match_wins_and_wildcards() -> None:
    rules = parse_robots(ROBOTS, AGENT)
    assert not rules.allows("https://example.com/private/x")
    assert rules.allows("https://example.com/private/public-page")  # longer Allow beats Disallow
    assert rules.allows("https://example.com/privateer")
    assert not rules.allows("https://example.com/files/report.pdf")
    assert rules.allows("https://example.com/files/report.pdf?download=1")  # $ anchors the end
    assert not rules.allows("https://example.com/search?lang=fa&q=shoes")
    assert rules.allows("https://example.com/shop/")
    assert not rules.allows("https://example.com/shop/item")
    assert rules.allows("https://example.com/robots.txt")


def test_wildcard_group_when_we_are_not_named() -> None:
    rules = parse_robots(ROBOTS, "SomeOtherCrawler/1.0")
    assert not rules.allows("https://example.com/admin/users")
    assert rules.crawl_delay == 9


def test_empty_disallow_allows_everything_and_missing_groups_mean_no_rules() -> None:
    assert parse_robots("User-agent: *\nDisallow:\n", AGENT).allows("https://example.com/anything")
    assert parse_robots("", AGENT).allows("https://example.com/anything")
    assert parse_robots("garbage\x00\n:::\n", AGENT).allows("https://example.com/x")


def test_persian_paths_match_escaped_and_unescaped() -> None:
    rules = parse_robots("User-agent: *\nDisallow: /محصولات\n", AGENT)
    assert not rules.allows("https://shop.ir/%D9%85%D8%AD%D8%B5%D9%88%D9%84%D8%A7%D8%AA/x")


def test_product_token() -> None:
    assert product_token(AGENT) == "pilitobot"
    assert product_token("PilitoBot") == "pilitobot"
