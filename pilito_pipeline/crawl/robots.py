"""robots.txt as RFC 9309 reads it: the group for our product token (else `*`), longest match
wins (allow on a tie), `*` and `$` wildcards, plus Crawl-delay and Sitemap lines."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

ROBOTS_MAX_BYTES = 500_000
"""RFC 9309 lets crawlers stop reading robots.txt after 500 KiB."""


@dataclass(frozen=True)
class RobotsRule:
    allow: bool
    path: str
    pattern: re.Pattern[str]


@dataclass(frozen=True)
class RobotsRules:
    rules: tuple[RobotsRule, ...] = ()
    crawl_delay: float | None = None
    sitemaps: tuple[str, ...] = ()
    unreachable_reason: str | None = None
    """Set when robots.txt could not be read (5xx, 429, network error): crawl nothing there."""

    def allows(self, url: str) -> bool:
        parts = urlsplit(url)
        target = _comparable(parts.path or "/") + (f"?{_comparable(parts.query)}" if parts.query else "")
        if target == "/robots.txt":
            return True
        if self.unreachable_reason:
            return False
        best: RobotsRule | None = None
        for rule in self.rules:
            if rule.pattern.match(target) and (
                best is None
                or len(rule.path) > len(best.path)
                or (len(rule.path) == len(best.path) and rule.allow and not best.allow)
            ):
                best = rule
        return best is None or best.allow


ALLOW_ALL = RobotsRules()


def product_token(user_agent: str) -> str:
    """`PilitoBot/0.1 (+https://...)` -> `pilitobot`."""
    return re.split(r"[/\s]", user_agent.strip(), maxsplit=1)[0].lower()


def parse_robots(text: str, user_agent: str) -> RobotsRules:
    """The rules that apply to `user_agent` (its product token matched case-insensitively)."""
    token = product_token(user_agent)
    groups: list[tuple[list[str], list[tuple[str, str]]]] = []
    sitemaps: list[str] = []
    in_agent_lines = False
    for raw_line in text.splitlines():
        line = raw_line.split("#", 1)[0].strip()
        if ":" not in line:
            continue
        key, value = (part.strip() for part in line.split(":", 1))
        key = key.lower()
        if key == "sitemap":
            if value:
                sitemaps.append(value)
            continue
        if key in ("user-agent", "useragent"):
            if not in_agent_lines:
                groups.append(([], []))
            groups[-1][0].append(value.lower())
            in_agent_lines = True
            continue
        in_agent_lines = False
        if groups and key in ("allow", "disallow", "crawl-delay"):
            groups[-1][1].append((key, value))

    directives = [d for agents, ds in groups if any(_agent_matches(a, token) for a in agents) for d in ds]
    if not directives:
        directives = [d for agents, ds in groups if "*" in agents for d in ds]
    rules: list[RobotsRule] = []
    crawl_delay: float | None = None
    for key, value in directives:
        if key == "crawl-delay":
            try:
                delay = float(value)
            except ValueError:
                continue
            if delay >= 0:
                crawl_delay = max(crawl_delay or 0.0, delay)
        elif value:  # an empty Disallow allows everything; an empty Allow means nothing
            path = _comparable(value)
            rules.append(RobotsRule(key == "allow", path, _compile(path)))
    return RobotsRules(tuple(rules), crawl_delay, tuple(dict.fromkeys(sitemaps)))


def _agent_matches(agent: str, token: str) -> bool:
    return agent != "*" and product_token(agent) == token


def _comparable(path: str) -> str:
    """Percent-decode (except `/`-like reserved escapes) so `%7E` and `~`, Persian text and its
    escapes compare equal."""
    return unquote(path.replace("%2F", "%252F").replace("%2f", "%252F"))


def _compile(path: str) -> re.Pattern[str]:
    anchored = path.endswith("$")
    body = path[:-1] if anchored else path
    regex = ".*".join(re.escape(piece) for piece in body.split("*"))
    return re.compile(regex + (r"\Z" if anchored else ""), re.DOTALL)
