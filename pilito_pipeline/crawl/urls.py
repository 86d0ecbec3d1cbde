"""URL normalisation (one spelling per page), numeric-host parsing, crawl scope and URL patterns."""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit, urlunsplit

DEFAULT_PORTS = {"http": 80, "https": 443}

TRACKING_PARAMETERS = frozenset(
    {
        "gclid", "gclsrc", "dclid", "gbraid", "wbraid", "fbclid", "msclkid", "yclid", "twclid",
        "ttclid", "li_fat_id", "igshid", "mc_cid", "mc_eid", "_ga", "_gl", "_hsenc", "_hsmi",
        "mkt_tok", "srsltid", "oly_anon_id", "oly_enc_id", "vero_id", "wickedid",
    }
)  # fmt: skip
"""Query parameters that only identify a click or campaign; `utm_*` is removed as a prefix."""

_PATH_SAFE = "/:@!$&'()*+,;=-._~%"
_QUERY_SAFE = "/?:@!$'()*+,;-._~%"
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_NUMERIC_LABEL = re.compile(r"^(0[xX][0-9A-Fa-f]*|[0-9]+)$")


def parse_numeric_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The address a numeric host spells the way browsers read it (WHATWG): `2130706433`,
    `0177.0.0.1`, `0x7f.1`, `127.1` all mean 127.0.0.1. None when the host is a name.

    Raises ValueError for a host that looks numeric but is out of range (never a DNS name).
    """
    labels = host.split(".")
    if labels and labels[-1] == "" and len(labels) > 1:
        labels = labels[:-1]
    if not labels or not _NUMERIC_LABEL.match(labels[-1]):
        return None
    if len(labels) > 4 or not all(_NUMERIC_LABEL.match(label) for label in labels):
        raise ValueError(f"malformed numeric host {host!r}")
    numbers = [_parse_ipv4_number(label) for label in labels]
    *leading, last = numbers
    if any(part > 255 for part in leading) or last >= 256 ** (5 - len(numbers)):
        raise ValueError(f"numeric host {host!r} is out of range")
    value = last
    for index, part in enumerate(leading):
        value += part << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def _parse_ipv4_number(label: str) -> int:
    if label[:2].lower() == "0x":
        return int(label[2:] or "0", 16)
    if len(label) > 1 and label.startswith("0"):
        if not set(label) <= set("01234567"):
            raise ValueError(f"malformed octal host part {label!r}")
        return int(label, 8)
    return int(label)


def canonical_host(host: str) -> str:
    """Lower-case, no trailing dot, IDNA (punycode) for non-ASCII names, numeric IPv4 spelled out."""
    host = host.strip().lower().rstrip(".")
    if not host:
        raise ValueError("URL has no host")
    if ":" in host:  # IPv6 literal (urlsplit already removed the brackets)
        return str(ipaddress.IPv6Address(host.split("%", 1)[0]))
    numeric = parse_numeric_ipv4(host)
    if numeric is not None:
        return str(numeric)
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise ValueError(f"invalid host name {host!r}") from exc
    return host


def _normalise_escapes(text: str, safe: str) -> str:
    """Upper-case percent-escapes, decode escaped unreserved characters, escape everything unsafe."""

    def fix(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else "%" + match.group(1).upper()

    return quote(_ESCAPE.sub(fix, text), safe=safe)


def _remove_dot_segments(path: str) -> str:
    output: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if len(output) > 1:
                output.pop()
        elif segment != ".":
            output.append(segment)
    result = "/".join(output)
    if path.endswith(("/.", "/..")):
        result += "/"
    return result if result.startswith("/") else "/" + result


def is_tracking_parameter(name: str) -> bool:
    lowered = name.lower()
    return lowered.startswith("utm_") or lowered in TRACKING_PARAMETERS


def normalize_url(url: str) -> str:
    """The one spelling of a page's URL, used to de-duplicate and to key stored pages.

    Lower-case scheme and host (IDNA for non-ASCII hosts, numeric IPv4 spelled out), no default
    port, no fragment, no user info, dot segments resolved, percent-escapes normalised (Persian
    paths come out UTF-8 escaped), no trailing slash except the root, tracking parameters
    (`utm_*`, `gclid`, `fbclid`, ...) removed and the remaining query parameters sorted.
    Raises ValueError for anything but an absolute http(s) URL.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"not an http(s) URL: {url[:200]!r}")
    host = canonical_host(parts.hostname or "")
    port = parts.port  # raises ValueError for a malformed port
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != DEFAULT_PORTS[scheme]:
        netloc += f":{port}"
    path = _remove_dot_segments(_normalise_escapes(parts.path or "/", _PATH_SAFE))
    if len(path) > 1 and path.endswith("/"):
        path = path.rstrip("/") or "/"
    parameters = [
        parameter
        for parameter in _normalise_escapes(parts.query, _QUERY_SAFE + "=&").split("&")
        if parameter and not is_tracking_parameter(unquote(parameter.split("=", 1)[0]))
    ]
    query = "&".join(sorted(parameters))
    return urlunsplit((scheme, netloc, path, query, ""))


@dataclass(frozen=True)
class SiteScope:
    """Which URLs belong to the website being crawled (and match its include/exclude patterns).

    Same site: same host (a leading `www.` ignored) and same port (80 and 443 count as the same
    port, so an http→https upgrade stays in scope); with `include_subdomains`, any subdomain too.
    Patterns are shell-style globs (`*`, `?`, `[...]`; `*` also matches `/`) matched against the
    URL's path plus `?query`, e.g. `/blog/*` or `*.pdf`.
    """

    site_host: str
    site_port: int
    include_subdomains: bool = False
    include_patterns: tuple[str, ...] = ()
    exclude_patterns: tuple[str, ...] = ()

    @classmethod
    def for_start_url(
        cls,
        start_url: str,
        include_subdomains: bool = False,
        include_patterns: tuple[str, ...] = (),
        exclude_patterns: tuple[str, ...] = (),
    ) -> SiteScope:
        parts = urlsplit(normalize_url(start_url))
        return cls(
            site_host=_without_www(parts.hostname or ""),
            site_port=_effective_port(parts.scheme, parts.port),
            include_subdomains=include_subdomains,
            include_patterns=include_patterns,
            exclude_patterns=exclude_patterns,
        )

    def same_site(self, normalized_url: str) -> bool:
        parts = urlsplit(normalized_url)
        if _effective_port(parts.scheme, parts.port) != self.site_port:
            return False
        host = _without_www(parts.hostname or "")
        return host == self.site_host or (self.include_subdomains and host.endswith("." + self.site_host))

    def matches_patterns(self, normalized_url: str) -> bool:
        parts = urlsplit(normalized_url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        if self.include_patterns and not any(fnmatch.fnmatchcase(target, p) for p in self.include_patterns):
            return False
        return not any(fnmatch.fnmatchcase(target, p) for p in self.exclude_patterns)

    def contains(self, normalized_url: str) -> bool:
        return self.same_site(normalized_url) and self.matches_patterns(normalized_url)


def _without_www(host: str) -> str:
    return host[4:] if host.startswith("www.") else host


def _effective_port(scheme: str, port: int | None) -> int:
    if port is None or port == DEFAULT_PORTS.get(scheme):
        return 0  # the scheme's default port: http and https count as one site
    return port
