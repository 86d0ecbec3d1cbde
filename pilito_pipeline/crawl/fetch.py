"""HTTP for the crawler: per-host spacing, 429/503 back-off, checked redirects, bounded bodies,
and connections made to the very address the SSRF guard approved."""

from __future__ import annotations

import email.utils
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from urllib.parse import quote, urljoin, urlsplit

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error

from pilito_pipeline.crawl.models import CrawlConfig, Outcome
from pilito_pipeline.crawl.safety import SafeTarget, UnsafeURLError, resolve_safe_target
from pilito_pipeline.crawl.urls import normalize_url

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
RETRY_STATUSES = frozenset({429, 503})
ACCEPT = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.1"
DRAIN_LIMIT_BYTES = 65_536
"""Unwanted bodies up to this size are read to keep the connection; larger ones close it."""
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"
_QUERY_SAFE = _PATH_SAFE + "?"


class FetchError(Exception):
    """A request that produced no usable response; `outcome` is how the page is recorded."""

    def __init__(self, outcome: Outcome, reason: str, http_status: int | None = None) -> None:
        super().__init__(reason)
        self.outcome: Outcome = outcome
        self.reason = reason
        self.http_status = http_status


class HostThrottle:
    """Spaces the start of requests to each host by its delay, across all worker threads."""

    def __init__(self, default_delay: float) -> None:
        self._default_delay = default_delay
        self._delays: dict[str, float] = {}
        self._last_start: dict[str, float] = {}
        self._hold_until: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def stop(self) -> None:
        """Wake every waiting worker; no request starts after this."""
        self._stopped.set()

    def set_delay(self, host: str, seconds: float) -> None:
        with self._lock:
            self._delays[host] = max(self._default_delay, seconds)

    def wait_turn(self, host: str) -> None:
        """Sleep until `host` may get the next request (raises FetchError once stopped)."""
        with self._lock:
            now = time.monotonic()
            start = now
            if host in self._last_start:
                start = max(start, self._last_start[host] + self._delays.get(host, self._default_delay))
            start = max(start, self._hold_until.get(host, 0.0))
            self._last_start[host] = start
        if self._stopped.wait(max(0.0, start - now)):
            raise FetchError("failed", "crawl stopped before this request")

    def hold_off(self, host: str, seconds: float) -> None:
        """No request to `host` for `seconds` (after a 429/503)."""
        with self._lock:
            until = time.monotonic() + seconds
            self._hold_until[host] = max(self._hold_until.get(host, 0.0), until)

    def delay(self, host: str) -> float:
        with self._lock:
            return self._delays.get(host, self._default_delay)


class OpenResponse:
    """A response whose body has not been read yet."""

    def __init__(self, url: str, raw: urllib3.BaseHTTPResponse, deadline: float) -> None:
        self.url = url
        self.raw = raw
        self.status = raw.status
        self.headers = raw.headers
        self._deadline = deadline

    def header(self, name: str) -> str | None:
        value = self.headers.get(name)
        return value.strip() if value else None

    def declared_length(self) -> int | None:
        try:
            return int(self.headers.get("Content-Length", ""))
        except ValueError:
            return None

    def read(self, limit: int, allow_truncated: bool = False) -> bytes:
        """The (decompressed) body; past `limit` bytes either truncate or raise FetchError
        ("skipped"). The connection is closed without reading the rest."""
        declared = self.declared_length()
        if declared is not None and declared > limit and not allow_truncated:
            raise FetchError("skipped", f"body too large: Content-Length {declared} > limit {limit}", self.status)
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in self.raw.stream(65_536, decode_content=True):
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    if allow_truncated:
                        return b"".join(chunks)[:limit]
                    raise FetchError("skipped", f"body too large: more than {limit} bytes", self.status)
                if time.monotonic() > self._deadline:
                    raise FetchError("failed", "download too slow: timed out reading the body", self.status)
        except Urllib3Error as exc:
            raise FetchError("failed", f"network error while reading: {type(exc).__name__}", self.status) from exc
        return b"".join(chunks)

    def discard(self) -> None:
        """Give the connection back: small bodies are drained, anything else closes it."""
        declared = self.declared_length()
        try:
            if declared is not None and declared <= DRAIN_LIMIT_BYTES and not self.raw.closed:
                self.raw.drain_conn()
            else:
                self.raw.close()
        except Urllib3Error:
            self.raw.close()
        finally:
            self.raw.release_conn()


class Fetcher:
    """GET with politeness and safety; one per crawl (holds its connection pools)."""

    def __init__(self, config: CrawlConfig, throttle: HostThrottle) -> None:
        self.config = config
        self.throttle = throttle
        self._pools: dict[tuple[str, str, int, str], urllib3.HTTPConnectionPool] = {}
        self._targets: dict[tuple[str, str, int], SafeTarget] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            for pool in self._pools.values():
                pool.close()
            self._pools.clear()

    @contextmanager
    def open(
        self,
        url: str,
        conditional_headers: Mapping[str, str] | None = None,
        check_redirect: Callable[[str], str | None] | None = None,
    ) -> Iterator[OpenResponse]:
        """Follow redirects (each target SSRF-checked and passed to `check_redirect`, which may
        name a reason to stop) and yield the final response; its connection is released after.
        Raises FetchError for refusals, loops, too many redirects and network errors."""
        chain = [url]
        headers = dict(conditional_headers or {})
        current = url
        while True:
            response = self._request_with_retries(current, headers)
            location = response.header("Location")
            if response.status not in REDIRECT_STATUSES or not location:
                break
            response.discard()
            status = response.status
            try:
                following = urljoin(current, location).split("#", 1)[0]
            except ValueError as exc:
                raise FetchError("failed", "redirect to a malformed URL", status) from exc
            if following in chain:
                raise FetchError("failed", f"redirect loop after {len(chain) - 1} redirects", status)
            if len(chain) > self.config.max_redirects:
                raise FetchError("failed", f"too many redirects (more than {self.config.max_redirects})", status)
            try:
                self._target(following)
            except UnsafeURLError as exc:
                raise FetchError("failed", f"redirect to {following} {exc}", status) from exc
            refusal = check_redirect(following) if check_redirect else None
            if refusal:
                raise FetchError("skipped", f"redirected to {following}: {refusal}", status)
            if not _same_page(following, url):
                headers = {}  # validators belong to the first URL (or its other spellings)
            chain.append(following)
            current = following
        try:
            yield response
        finally:
            response.discard()

    def _request_with_retries(self, url: str, extra_headers: Mapping[str, str]) -> OpenResponse:
        for attempt in range(self.config.max_retries + 1):
            response = self._request(url, extra_headers)
            if response.status not in RETRY_STATUSES or attempt == self.config.max_retries:
                return response
            host = self._target(url).host
            wait = retry_after_seconds(response.header("Retry-After"))
            if wait is None:
                wait = max(1.0, self.throttle.delay(host)) * 2**attempt
            response.discard()
            limit = self.config.max_retry_after_seconds
            if wait > limit:
                reason = f"HTTP {response.status}: asked to wait {wait:.0f}s, more than {limit:.0f}s"
                raise FetchError("failed", reason, response.status)
            self.throttle.hold_off(host, wait)
        raise AssertionError("unreachable: the last attempt returns")

    def _request(self, url: str, extra_headers: Mapping[str, str]) -> OpenResponse:
        try:
            target = self._target(url)
        except UnsafeURLError as exc:
            raise FetchError("failed", str(exc)) from exc
        parts = urlsplit(url)
        request_target = quote(parts.path or "/", safe=_PATH_SAFE)
        if parts.query:
            request_target += "?" + quote(parts.query, safe=_QUERY_SAFE)
        host_header = f"[{target.host}]" if ":" in target.host else target.host
        if target.port != (443 if target.scheme == "https" else 80):
            host_header += f":{target.port}"
        headers = {
            "Host": host_header,
            "User-Agent": self.config.user_agent,
            "Accept": ACCEPT,
            "Accept-Encoding": "gzip, deflate",
            **extra_headers,
        }
        timeout = self.config.timeout_seconds
        self.throttle.wait_turn(target.host)
        try:
            raw = self._pool(target).urlopen(
                "GET",
                request_target,
                headers=headers,
                redirect=False,
                retries=False,
                preload_content=False,
                decode_content=True,
                assert_same_host=False,
                timeout=urllib3.Timeout(connect=timeout, read=timeout),
            )
        except Urllib3Error as exc:
            raise FetchError("failed", f"network error: {_describe(exc)}") from exc
        return OpenResponse(url, raw, deadline=time.monotonic() + timeout)

    def _target(self, url: str) -> SafeTarget:
        parts = urlsplit(url)
        key = (parts.scheme.lower(), (parts.hostname or "").lower(), parts.port or 0)
        with self._lock:
            cached = self._targets.get(key)
        if cached is not None:
            return cached
        target = resolve_safe_target(url, self.config.allowed_hosts)
        with self._lock:
            return self._targets.setdefault(key, target)

    def _pool(self, target: SafeTarget) -> urllib3.HTTPConnectionPool:
        key = (target.scheme, target.address, target.port, target.host)
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                pool = self._new_pool(target)
                self._pools[key] = pool
            return pool

    def _new_pool(self, target: SafeTarget) -> urllib3.HTTPConnectionPool:
        size = self.config.max_concurrency
        if target.scheme == "http":
            return urllib3.HTTPConnectionPool(target.address, target.port, maxsize=size, block=False)
        return urllib3.HTTPSConnectionPool(
            target.address,
            target.port,
            maxsize=size,
            block=False,
            cert_reqs="CERT_REQUIRED",
            server_hostname=target.host,
            assert_hostname=target.host,
        )


def _same_page(first: str, second: str) -> bool:
    try:
        return normalize_url(first) == normalize_url(second)
    except ValueError:
        return False


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds from now (delta-seconds or an HTTP date); None when absent/invalid."""
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _describe(exc: Exception) -> str:
    """Exception type plus the innermost cause, without URLs (which could carry query secrets)."""
    cause = exc
    while cause.__cause__ is not None or (cause.__context__ is not None and not cause.__suppress_context__):
        cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
    name = type(exc).__name__
    return name if cause is exc else f"{name} ({type(cause).__name__}: {cause})"
