"""A whole stack the recovery tests can break: its own embedded PostgreSQL (so it can be stopped),
its own redis-server on a free loopback port, the fake OpenAI embeddings server, small HTTP sites,
and `dagster dev` (webserver + daemon) with the project's dagster.yaml on Postgres storage, its
run-monitoring intervals shortened so faults are found in seconds rather than minutes."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
import psycopg
import pytest
import yaml

from pilito_pipeline.defs.partitions import RUN_KIND_TAG, TENANT_TAG
from pilito_pipeline.ingest.sources import knowledge_rows
from pilito_pipeline.app.dagster_process import DagsterProcess, ensure_dagster_database, launch_dagster_dev
from pilito_pipeline.settings import PROJECT_ROOT
from pilito_pipeline.store.db import connect
from pilito_pipeline.store.migrate import migrate
from pilito_pipeline.store.server import embedded_server_uri, stop_embedded_server
from pilito_pipeline.text import chunk_document, extract_document
from pilito_pipeline_tests.embed.openai_server import EmbeddingServer, running_server

T = TypeVar("T")
DEADLINE = 420.0
"""Every wait: minutes, so a loaded machine is slow, not failing."""
EMBEDDING_MODEL = "text-embedding-3-small"
TEST_MONITORING = {
    "poll_interval_seconds": 5,
    "start_timeout_seconds": 90,
    "cancel_timeout_seconds": 60,
    "free_slots_after_run_end_seconds": 5,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = DEADLINE, on_error: type = ()) -> T:
    """Poll until `probe` returns something truthy; errors of type `on_error` count as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = probe()
        except on_error:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)


# --- a small site; one page can be held back to catch a crawl in the middle -------------------------

PARAGRAPH = (
    "Our {topic} course meets twice a week in small groups. Teachers prepare every lesson with care "
    "and students practise speaking, listening, reading and writing. The {topic} fee is paid per "
    "term and scholarships cover part of it for students who need help. Lessons {n} cover grammar, "
    "vocabulary and real conversations about work, travel and study."
)


def site_pages(name: str, count: int) -> dict[str, str]:
    links = "".join(f'<li><a href="/p{i}.html">{name} page {i}</a></li>' for i in range(count))
    pages = {"/": f"<html><head><title>{name}</title></head><body><h1>{name} school</h1>"
                  f"<p>{PARAGRAPH.format(topic=name, n='intro')}</p><ul>{links}</ul></body></html>"}
    for i in range(count):
        body = "".join(
            f"<h2>{name} section {i}.{s}</h2><p>{PARAGRAPH.format(topic=f'{name} {i}', n=s)}</p>"
            for s in range(3)
        )
        pages[f"/p{i}.html"] = (
            f"<html><head><title>{name} page {i}</title></head><body><h1>{name} page {i}</h1>{body}"
            '<a href="/">home</a></body></html>'
        )
    return pages


@dataclass
class Site:
    url: str
    pages: dict[str, str]
    held: threading.Event = field(default_factory=threading.Event)
    """Cleared: requests for `held_path` wait until it is set again."""
    held_path: str = ""
    requested: list[str] = field(default_factory=list)

    def expected_rows(self, tenant: str) -> dict[str, int]:
        """Rows per page URL the pipeline must end with (one per parent and child chunk)."""
        expected = {}
        for path, html in self.pages.items():
            url = self.url.rstrip("/") + path
            chunks = chunk_document(extract_document(html, url))
            expected[url] = len(knowledge_rows(tenant, "website", "p", url, chunks))
        return expected


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a killed worker hangs up
            super().handle_error(request, client_address)  # type: ignore[arg-type]


@pytest.fixture
def make_site() -> Iterator[Callable[..., Site]]:
    servers: list[ThreadingHTTPServer] = []

    def make(name: str, count: int = 5, held_path: str = "") -> Site:
        site = Site(url="", pages=site_pages(name, count), held_path=held_path)
        site.held.set()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                site.requested.append(self.path)
                if self.path == site.held_path:
                    site.held.wait()
                html = site.pages.get(self.path)
                raw = (html or "not found").encode()
                self.send_response(200 if html else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        server = _QuietServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        servers.append(server)
        site.url = f"http://127.0.0.1:{server.server_address[1]}/"
        return site

    yield make
    for server in servers:
        server.shutdown()
        server.server_close()


# --- the stack ----------------------------------------------------------------------------------------


@dataclass
class Stack:
    data_dir: Path
    database_url: str
    dagster_home: Path
    env: dict[str, str]
    embeddings: EmbeddingServer
    redis_port: int
    redis: subprocess.Popen | None = None
    dagster: DagsterProcess | None = None
    instance: dg.DagsterInstance | None = None

    # Dagster
    def start_dagster(self) -> None:
        self.dagster = launch_dagster_dev(
            self.dagster_home, self.env["DAGSTER_POSTGRES_URL"], self.data_dir / "dagster.log", self.env,
            port=free_port(),
        )
        self.dagster.wait_until_ready(timeout=DEADLINE)

    def stop_dagster(self) -> None:
        """As Ctrl-C of `make demo` does: SIGINT to the group, SIGKILL to what is left after 30 s."""
        if self.dagster is not None:
            self.dagster.stop()
            self.dagster = None

    def crash_dagster(self) -> None:
        """As a crash, an out-of-memory kill or a lost machine does: SIGKILL to the whole group
        (webserver, daemon, code servers and their run workers)."""
        os.killpg(self.dagster.process.pid, signal.SIGKILL)
        self.dagster.process.wait()
        self.dagster = None

    def log_tail(self) -> str:
        path = self.data_dir / "dagster.log"
        return path.read_text(errors="replace")[-6000:] if path.exists() else ""

    # Redis
    def start_redis(self) -> None:
        self.redis = subprocess.Popen(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.data_dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis(port=self.redis_port)
        wait_for("redis-server", client.ping, on_error=redis.ConnectionError)

    def kill_redis(self) -> None:
        if self.redis is not None:
            self.redis.kill()
            self.redis.wait()
            self.redis = None

    # PostgreSQL
    def stop_postgres(self) -> None:
        stop_embedded_server(self.data_dir)

    def start_postgres(self) -> None:
        """In a new process, as any process of the stack finding it stopped would."""
        code = "import sys; from pathlib import Path; from pilito_pipeline.store.server import embedded_server_uri;" \
               " print(embedded_server_uri(Path(sys.argv[1])))"
        out = subprocess.run([sys.executable, "-c", code, str(self.data_dir)], check=True, capture_output=True,
                             text=True, env=self.env, timeout=DEADLINE).stdout.strip().splitlines()[-1]
        assert out == self.database_url, (out, self.database_url)

    # what the tests look at
    def running_run(self, tenant: str, kind: str) -> dg.DagsterRun:
        """The tenant's STARTED run of `kind` (`crawl` or `pages`)."""
        def probe() -> dg.DagsterRun | None:
            runs = self.instance.get_runs(
                filters=dg.RunsFilter(
                    statuses=[dg.DagsterRunStatus.STARTED], tags={TENANT_TAG: tenant, RUN_KIND_TAG: kind}
                )
            )
            return runs[0] if runs else None

        return wait_for(f"a STARTED {kind} run of tenant {tenant}", probe)

    def knowledge_gap(self, tenant: str, expected: dict[str, int]) -> tuple[int, int]:
        """(rows lost, stale rows) against the rows expected per page URL."""
        with connect(self.database_url) as conn:
            rows = conn.execute(
                """
                SELECT document_id, count(*) AS n,
                       count(*) FILTER (WHERE NOT is_parent AND full_embedding IS NULL) AS unembedded
                FROM tenant_knowledge WHERE tenant_id = %s AND chunk_type = 'website' GROUP BY document_id
                """,
                (tenant,),
            ).fetchall()
        found = {r["document_id"]: r["n"] - r["unembedded"] for r in rows}
        lost = sum(max(0, n - found.get(url, 0)) for url, n in expected.items())
        stale = sum(max(0, n - expected.get(url, 0)) for url, n in found.items())
        stale += sum(r["unembedded"] for r in rows)
        return lost, stale

    def fully_processed(self, tenant: str, expected: dict[str, int]) -> bool:
        with connect(self.database_url) as conn:
            status = conn.execute(
                "SELECT status FROM websites WHERE tenant_id = %s", (tenant,)
            ).fetchone()
        return status is not None and status["status"] == "ready" and self.knowledge_gap(tenant, expected) == (0, 0)

    def wait_processed(self, tenant: str, expected: dict[str, int], what: str) -> float:
        """Wait until the tenant's pages are all in, exactly; the time it happened (monotonic)."""
        try:
            wait_for(f"{tenant} fully processed ({what})", lambda: self.fully_processed(tenant, expected),
                     on_error=(psycopg.OperationalError,))
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; gap={self.knowledge_gap(tenant, expected)}\n{self.log_tail()}") from exc
        return time.monotonic()


def write_test_dagster_yaml(home: Path) -> Path:
    """The project's dagster.yaml with run monitoring polling every few seconds."""
    config = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    config["run_monitoring"] = {**config["run_monitoring"], **TEST_MONITORING}
    home.mkdir(parents=True, exist_ok=True)
    path = home / "dagster.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    # Not under pytest's basetemp: other pytest sessions on the machine prune old basetemps, and this
    # folder holds a running server's data.
    data_dir = Path(tempfile.mkdtemp(prefix="pilito-recovery-"))
    database_url = embedded_server_uri(data_dir)
    migrate(database_url, embedding_dimension=384)
    home = data_dir / "dagster_home"
    write_test_dagster_yaml(home)
    dagster_url = ensure_dagster_database(database_url)
    redis_port = free_port()
    saved = dict(os.environ)
    with running_server() as embeddings:
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "DAGSTER_HOME": str(home),
            "DAGSTER_POSTGRES_URL": dagster_url,
            "PILITO_DATA_DIR": str(data_dir),
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "EMBEDDING_PROVIDER": "openai",
            "EMBEDDING_MODEL": EMBEDDING_MODEL,
            "EMBEDDING_DIMENSION": "384",
            "OPENAI_API_KEY": "sk-test-recovery",
            "OPENAI_BASE_URL": embeddings.url,
            "CRAWL_ALLOWED_HOSTS": "127.0.0.1",
            "CRAWL_RATE_LIMIT_SECONDS": "0.05",
            "HF_HUB_OFFLINE": "1",
        }
        os.environ.update({"DAGSTER_HOME": str(home), "DAGSTER_POSTGRES_URL": dagster_url})
        stack = Stack(data_dir, database_url, home, env, embeddings, redis_port)
        try:
            stack.start_redis()
            stack.start_dagster()
            stack.instance = dg.DagsterInstance.from_config(str(home))
            yield stack
        finally:
            stack.stop_dagster()
            stack.kill_redis()
            embeddings.admitted.set()
            if stack.instance is not None:
                stack.instance.dispose()
            stop_embedded_server(data_dir)
            os.environ.clear()
            os.environ.update(saved)
            shutil.rmtree(data_dir, ignore_errors=True)
