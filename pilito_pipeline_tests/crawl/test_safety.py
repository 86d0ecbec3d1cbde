"""SSRF guard: every spelling of a non-public address is refused; the allow-list exempts hosts."""

from __future__ import annotations

import ipaddress

import pytest

from pilito_pipeline.crawl import UnsafeURLError, check_url_safe
from pilito_pipeline.crawl.safety import non_public_reason, resolve_safe_target


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://localhost:8000/",
        "http://2130706433/",  # decimal
        "http://0177.0.0.1/",  # octal
        "http://0x7f.0.0.1/",  # hex
        "http://0x7f000001/",
        "http://127.1/",  # short forms
        "http://127.0.1/",
        "http://[::1]/",  # IPv6 loopback
        "http://[::ffff:127.0.0.1]/",  # IPv4-mapped IPv6
        "http://[::ffff:7f00:1]/",
        "http://[fd00::1]/",  # unique local
        "http://[fe80::1]/",  # link-local
        "http://[fe80::1%25eth0]/",  # zone identifier
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://2852039166/",  # 169.254.169.254 as one number
        "http://[fd00:ec2::254]/",  # AWS IPv6 metadata
        "http://100.100.100.200/",  # Alibaba metadata (shared address space)
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://10.0.0.1/", "http://172.16.5.4/", "http://192.168.1.1/",  # private
        "http://0.0.0.0/", "http://0/", "http://[::]/",  # unspecified
        "http://224.0.0.1/", "http://[ff02::1]/",  # multicast
        "http://240.0.0.1/", "http://255.255.255.255/",  # reserved, broadcast
        "http://[64:ff9b::7f00:1]/",  # NAT64 of 127.0.0.1
        "http://[2002:a9fe:a9fe::]/",  # 6to4 of 169.254.169.254
        "ftp://example.com/", "file:///etc/passwd", "gopher://example.com/", "javascript:alert(1)",
        "http://user:password@example.com/", "http://user@example.com/",  # credentials
        "http://256.1.1.1/",  # malformed numeric host
        "http://does-not-exist.invalid/",  # cannot be checked: refused
    ],
)  # fmt: skip
def test_unsafe_urls_are_refused(url: str) -> None:
    with pytest.raises(UnsafeURLError, match="refused"):
        check_url_safe(url)


def test_public_addresses_pass() -> None:
    check_url_safe("http://93.184.215.14/")
    check_url_safe("https://[2606:4700:4700::1111]:8443/x")
    assert non_public_reason(ipaddress.ip_address("8.8.8.8")) is None


def test_allow_list_takes_hosts_ips_and_cidrs() -> None:
    check_url_safe("http://127.0.0.1:8080/", allowed_hosts=("127.0.0.1",))
    check_url_safe("http://2130706433/", allowed_hosts=("127.0.0.1",))  # same address, other spelling
    check_url_safe("http://10.1.2.3/", allowed_hosts=("10.0.0.0/8",))
    check_url_safe("http://localhost/", allowed_hosts=("localhost",))
    with pytest.raises(UnsafeURLError):
        check_url_safe("http://10.1.2.3/", allowed_hosts=("127.0.0.1",))
    with pytest.raises(UnsafeURLError, match="credentials"):
        check_url_safe("http://a:b@127.0.0.1/", allowed_hosts=("127.0.0.1",))


def test_the_checked_address_is_the_one_to_connect_to() -> None:
    target = resolve_safe_target("http://0x7f.1:8080/a", allowed_hosts=("127.0.0.0/8",))
    assert (target.scheme, target.host, target.port, target.address) == ("http", "127.0.0.1", 8080, "127.0.0.1")
