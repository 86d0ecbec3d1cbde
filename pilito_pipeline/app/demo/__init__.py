"""The bundled sample website: a fictional Tehran language school ("آموزشگاه زبان آوای نو").

`site/` holds static pages (mostly Persian, two English, one mixed Persian/English blog post, one
page written with Arabic letters ي ك and Arabic-Indic digits, one image-only gallery with no text to
extract) with real navigation, sidebar, cookie banner and footer boilerplate. Some pages are only
reachable at depth 2 (course details under /courses.html, blog posts under /blog/index.html, the
English scholarship page under /en/index.html). `robots.txt` disallows /admin/ and names the sitemap.

Sitemap URLs must be absolute, so `robots.txt` and `sitemap.xml` are written with the placeholder
host `SITE_HOST`; `serve_demo_site` replaces it with the host:port it actually listens on.
"""

from __future__ import annotations

import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SITE_DIR = Path(__file__).resolve().parent / "site"
HOST_PLACEHOLDER = "SITE_HOST"
_TEMPLATED_FILES = {"/robots.txt": "text/plain; charset=utf-8", "/sitemap.xml": "application/xml; charset=utf-8"}


class _DemoSiteHandler(SimpleHTTPRequestHandler):
    """Static files from `site/`, with the host placeholder filled in robots.txt and sitemap.xml."""

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path not in _TEMPLATED_FILES:
            super().do_GET()
            return
        host, port = self.server.server_address[:2]
        body = (SITE_DIR / path.lstrip("/")).read_text(encoding="utf-8")
        payload = body.replace(HOST_PLACEHOLDER, f"{host}:{port}").encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", _TEMPLATED_FILES[path])
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - signature of the base class
        """Stay quiet: tests and the demo print what matters themselves."""


class DemoSiteServer(ThreadingHTTPServer):
    """The running sample site; `shutdown()` stops serving and closes the socket."""

    daemon_threads = True

    def shutdown(self) -> None:
        super().shutdown()
        self.server_close()


def serve_demo_site(host: str = "127.0.0.1", port: int = 0) -> tuple[DemoSiteServer, str]:
    """Serve the sample site on `host:port` (0 picks a free port) in a background thread.

    Returns the server (call `shutdown()` when done) and its base URL, e.g. `http://127.0.0.1:8765/`.
    """
    handler = partial(_DemoSiteHandler, directory=str(SITE_DIR))
    server = DemoSiteServer((host, port), handler)
    thread = threading.Thread(target=server.serve_forever, name="demo-site", daemon=True)
    thread.start()
    bound_host, bound_port = server.server_address[:2]
    return server, f"http://{bound_host}:{bound_port}/"
