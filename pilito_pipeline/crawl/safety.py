"""SSRF guard: a URL may be fetched only when every address its host resolves to is public.

`resolve_safe_target` returns the checked address so the caller connects to exactly that IP
(no second DNS lookup, hence no DNS-rebinding window between the check and the connection).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from pilito_pipeline.crawl.urls import DEFAULT_PORTS, canonical_host

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA_HOST_NAMES = frozenset({"metadata", "metadata.google.internal", "metadata.goog", "instance-data"})
"""Cloud metadata services reachable by name (their addresses are link-local and refused anyway)."""

NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")


class UnsafeURLError(ValueError):
    """The URL may not be fetched: bad scheme, credentials, or a non-public destination."""


@dataclass(frozen=True)
class SafeTarget:
    """Where to connect for a checked URL."""

    scheme: str
    host: str
    """Canonical host name (or IP literal) for the Host header and TLS."""
    port: int
    address: str
    """The checked IP to connect to."""


def check_url_safe(url: str, allowed_hosts: tuple[str, ...] = ()) -> None:
    """Refuse (UnsafeURLError) URLs that are not plain public http(s) URLs.

    Refused: schemes other than http/https, user:password@ in the URL, hosts that resolve to
    loopback, private, link-local (169.254.169.254 and other cloud metadata), shared, multicast,
    reserved or unspecified addresses, in any spelling (`2130706433`, `0177.0.0.1`, `0x7f.1`,
    `127.1`, `[::ffff:127.0.0.1]`, `[::1]`, `[fd00::1]`, ...), and hosts that do not resolve.
    `allowed_hosts` lists host names, IPs or CIDRs that are exempt (tests allow "127.0.0.1").
    """
    resolve_safe_target(url, allowed_hosts)


def resolve_safe_target(url: str, allowed_hosts: tuple[str, ...] = ()) -> SafeTarget:
    """Check `url` as `check_url_safe` does and return the address to connect to."""
    scheme, host, port = _parse(url)
    allowed_names, allowed_networks = _parse_allow_list(allowed_hosts)
    if host in allowed_names:
        return SafeTarget(scheme, host, port, _resolve(host, port)[0])
    if host in METADATA_HOST_NAMES:
        raise UnsafeURLError(f"refused: {host} is a cloud metadata service")
    addresses = _resolve(host, port)
    for address in addresses:
        ip = ipaddress.ip_address(address)
        if any(ip in network for network in allowed_networks):
            continue
        problem = non_public_reason(ip)
        if problem:
            shown = host if host == address else f"{host} ({address})"
            raise UnsafeURLError(f"refused: {shown} is not a public address ({problem})")
    return SafeTarget(scheme, host, port, addresses[0])


def non_public_reason(ip: IPAddress) -> str | None:
    """Why `ip` must not be contacted (e.g. "loopback"), or None for a public unicast address."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in NAT64_PREFIX:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            reason = non_public_reason(embedded)
            return f"{reason}, embedded in IPv6" if reason else None
    for reason, flagged in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local (cloud metadata range)", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    ):
        if flagged:
            return reason
    return None if ip.is_global else "non-public"


def _parse(url: str) -> tuple[str, str, int]:
    try:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS:
            raise UnsafeURLError(f"refused: scheme {scheme or '(none)'!r} is not http or https")
        if parts.username is not None or parts.password is not None:
            raise UnsafeURLError("refused: credentials in URLs are not allowed")
        if "%" in (parts.hostname or "") and ":" in (parts.hostname or ""):
            raise UnsafeURLError("refused: IPv6 zone identifiers are not allowed")
        host = canonical_host(parts.hostname or "")
        port = parts.port or DEFAULT_PORTS[scheme]
    except UnsafeURLError:
        raise
    except ValueError as exc:
        raise UnsafeURLError(f"refused: malformed URL ({exc})") from exc
    return scheme, host, port


def _parse_allow_list(allowed_hosts: tuple[str, ...]) -> tuple[set[str], list[IPNetwork]]:
    names: set[str] = set()
    networks: list[IPNetwork] = []
    for entry in allowed_hosts:
        entry = entry.strip().strip("[]")
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            names.add(canonical_host(entry))
    return names, networks


def _resolve(host: str, port: int) -> list[str]:
    """All addresses of `host` (an IP literal resolves to itself), IPv4 first."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise UnsafeURLError(f"refused: host {host} does not resolve ({exc})") from exc
    addresses = list(dict.fromkeys(str(info[4][0]).split("%", 1)[0] for info in infos))
    if not addresses:
        raise UnsafeURLError(f"refused: host {host} does not resolve")
    return sorted(addresses, key=lambda address: ":" in address)
