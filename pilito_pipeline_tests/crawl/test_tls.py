"""HTTPS: the crawler connects to the checked IP yet verifies the certificate for the host name.

tls/ holds a throwaway test CA and a `localhost` certificate signed by it (test-only keys,
valid until 2125); the CA is trusted through SSL_CERT_FILE for these tests only.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pilito_pipeline.crawl import CrawlAbortedError, CrawlConfig, crawl_website

TLS = Path(__file__).parent / "tls"


class HostEcho(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self) -> None:  # noqa: N802
        body = f"<html><body>Host: {self.headers['Host']}</body></html>".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def https_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), HostEcho)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(TLS / "localhost.pem", TLS / "localhost-key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_https_verified_for_the_host_name(https_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(TLS / "ca.pem"))
    config = CrawlConfig(rate_limit_seconds=0, timeout_seconds=60, allowed_hosts=("127.0.0.1",))

    (page,) = list(crawl_website(f"https://localhost:{https_port}/", config))

    assert page.outcome == "fetched", page.reason
    assert f"Host: localhost:{https_port}" in (page.html or "")
    with pytest.raises(CrawlAbortedError, match="SSL"):  # the certificate names localhost only
        list(crawl_website(f"https://127.0.0.1:{https_port}/", config))


def test_untrusted_certificate_fails_the_page(https_port: int) -> None:
    config = CrawlConfig(rate_limit_seconds=0, timeout_seconds=60, allowed_hosts=("127.0.0.1",))

    with pytest.raises(CrawlAbortedError, match=r"robots.txt unreachable \(network error: SSLError"):
        list(crawl_website(f"https://localhost:{https_port}/", config))
