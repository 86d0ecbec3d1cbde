"""A real HTTP site on 127.0.0.1 for crawler tests: routes set per test, every request recorded
on the server side (path, headers, arrival time, bytes sent)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pilito_pipeline.crawl import CrawlConfig

HTML = "text/html; charset=utf-8"


@dataclass
class Response:
    status: int = 200
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": HTML})
    body: bytes | Iterable[bytes] = b""
    """Bytes, or chunks streamed until the client hangs up (no Content-Length unless given)."""


@dataclass(frozen=True)
class SeenRequest:
    path: str
    headers: dict[str, str]
    at: float


Handler = Callable[[SeenRequest], Response]


class Site:
    """Routes by path (with query); unknown paths answer 404."""

    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.requests: list[SeenRequest] = []
        self.bytes_sent: dict[str, int] = {}
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def route(self, path: str, handler: Handler) -> None:
        self.routes[path] = handler

    def add(self, path: str, body: str | bytes, status: int = 200, content_type: str = HTML,
            headers: dict[str, str] | None = None) -> None:  # fmt: skip
        payload = body.encode() if isinstance(body, str) else body
        response = Response(status, {"Content-Type": content_type, **(headers or {})}, payload)
        self.routes[path] = lambda request: response

    def page(self, path: str, links: Iterable[str] = (), text: str = "") -> None:
        anchors = "".join(f'<a href="{link}">{link}</a> ' for link in links)
        self.add(path, f"<html><head><title>{path}</title></head><body><p>{text or path}</p>{anchors}</body></html>")

    def redirect(self, path: str, location: str, status: int = 301) -> None:
        self.add(path, b"", status=status, headers={"Location": location})

    def hits(self, path: str) -> list[SeenRequest]:
        with self._lock:
            return [request for request in self.requests if request.path == path]

    def paths(self) -> list[str]:
        with self._lock:
            return [request.path for request in self.requests]

    def record(self, request: SeenRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def count_sent(self, path: str, size: int) -> None:
        with self._lock:
            self.bytes_sent[path] = self.bytes_sent.get(path, 0) + size


def _make_handler(site: Site) -> type[BaseHTTPRequestHandler]:
    class SiteHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are separate writes: avoid 40 ms delayed-ACK stalls

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            request = SeenRequest(self.path, dict(self.headers.items()), time.monotonic())
            site.record(request)
            handler = site.routes.get(self.path) or site.routes.get(self.path.split("?", 1)[0])
            response = handler(request) if handler else Response(404, {"Content-Type": HTML}, b"not found")
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            if isinstance(response.body, bytes):
                self.send_header("Content-Length", str(len(response.body)))
                self.end_headers()
                self.wfile.write(response.body)
                site.count_sent(self.path, len(response.body))
                return
            if "Content-Length" not in response.headers:
                self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            try:
                for chunk in response.body:
                    self.wfile.write(chunk)
                    site.count_sent(self.path, len(chunk))
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    return SiteHandler


@pytest.fixture
def site() -> Iterator[Site]:
    served = Site()
    served.thread.start()
    yield served
    served.server.shutdown()
    served.server.server_close()


@pytest.fixture
def config() -> CrawlConfig:
    """Fast settings for loopback tests; 127.0.0.1 exempt from the SSRF guard. The request timeout is
    generous: it only bounds a failing test, and a loaded machine must not turn slowness into failures."""
    return CrawlConfig(rate_limit_seconds=0, timeout_seconds=60, allowed_hosts=("127.0.0.1",))
