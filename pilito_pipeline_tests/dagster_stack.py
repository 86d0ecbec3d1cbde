"""The one Dagster stack for orchestration, recovery tests and benchmarks: an embedded PostgreSQL of
its own, `dagster dev` (webserver + daemon + run queue) with the project's dagster.yaml on Postgres
storage (run monitoring optionally polling faster, so faults are found in seconds), optionally a
redis-server of its own that a test can kill, plus sites served on 127.0.0.1 and what the tests ask
of the runs. Each part can be stopped and started again, as the recovery tests do."""

from __future__ import annotations

import functools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import yaml

from pilito_pipeline.app.dagster_process import DagsterProcess, ensure_dagster_database, launch_dagster_dev
from pilito_pipeline.defs.partitions import (
    PARTITION_RANGE_END_TAG,
    PARTITION_RANGE_START_TAG,
    RUN_KIND_TAG,
    TENANT_TAG,
    pages_partitions,
)
from pilito_pipeline.ingest.sources import knowledge_rows
from pilito_pipeline.settings import PROJECT_ROOT, settings_from_env
from pilito_pipeline.store.db import connect
from pilito_pipeline.store.migrate import migrate
from pilito_pipeline.store.server import embedded_server_uri, stop_embedded_server
from pilito_pipeline.store.websites import register_website
from pilito_pipeline.text import chunk_document, extract_document
from pilito_pipeline_tests.embed.openai_server import EmbeddingServer
from pilito_pipeline_tests.services import free_port
from pilito_pipeline_tests.waiting import DEADLINE, wait_for

FAST_RUN_MONITORING = {
    "poll_interval_seconds": 5,
    "start_timeout_seconds": 90,
    "cancel_timeout_seconds": 60,
    "free_slots_after_run_end_seconds": 5,
}
"""Run monitoring for fault tests: dead runs found in seconds rather than minutes."""

WORDS_EN = (
    "course price teacher exam schedule online campus library workshop certificate students lesson "
    "grammar speaking listening writing reading term scholarship office hours register weekend"
).split()


# --- sites ------------------------------------------------------------------------------------------


def write_site_tree(root: Path, pages: int, page_html: Callable[[int, str], str]) -> None:
    """`pages` HTML pages, page<i>.html = `page_html(i, its links)`, linked as a tree of fan-out 10
    (depth ≤ 3 for 1,000 pages) from index.html."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(pages):
        children = range(10 * i + 1, min(10 * i + 11, pages))
        links = "".join(f'<a href="/page{j}.html">page {j}</a> ' for j in children)
        (root / f"page{i}.html").write_text(page_html(i, links), encoding="utf-8")
    (root / "index.html").write_text('<html><body><a href="/page0.html">start</a></body></html>', encoding="utf-8")


def generate_site(root: Path, pages: int, name: str = "site", seed: int = 7) -> None:
    """`pages` HTML pages of distinct English text (`write_site_tree`)."""
    rng = random.Random(f"{name}-{seed}")

    def page_html(i: int, links: str) -> str:
        paragraphs = "".join(
            "<p>" + " ".join(rng.choice(WORDS_EN) for _ in range(60)) + f" {name} page {i}.</p>" for _ in range(3)
        )
        return (f"<html lang='en'><head><title>{name} page {i}</title></head><body><nav>{links}</nav>"
                f"<main><h1>{name} page {i}</h1>{paragraphs}</main></body></html>")

    write_site_tree(root, pages, page_html)


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def served(root: Path) -> Iterator[str]:
    """The files under `root` served on a free loopback port; yields the site's URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


PARAGRAPH = (
    "Our {topic} course meets twice a week in small groups. Teachers prepare every lesson with care "
    "and students practise speaking, listening, reading and writing. The {topic} fee is paid per "
    "term and scholarships cover part of it for students who need help. Lessons {n} cover grammar, "
    "vocabulary and real conversations about work, travel and study."
)


def site_pages(name: str, count: int) -> dict[str, str]:
    """A home page linking `count` pages of three sections each, by path."""
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
    """A site served from memory; one page can be held back to catch a crawl in the middle."""

    url: str
    pages: dict[str, str]
    path_released: threading.Event = field(default_factory=threading.Event)
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


def _site_handler(site: Site) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            site.requested.append(self.path)
            if self.path == site.held_path:
                site.path_released.wait()
            html = site.pages.get(self.path)
            raw = (html or "not found").encode()
            self.send_response(200 if html else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

    return Handler


@contextmanager
def site_factory() -> Iterator[Callable[..., Site]]:
    """`make(name, count=5, held_path="")` serves a new `Site`; all are stopped on exit."""
    servers: list[ThreadingHTTPServer] = []

    def make(name: str, count: int = 5, held_path: str = "") -> Site:
        site = Site(url="", pages=site_pages(name, count), held_path=held_path)
        site.path_released.set()
        server = _QuietServer(("127.0.0.1", 0), _site_handler(site))
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        servers.append(server)
        site.url = f"http://127.0.0.1:{server.server_address[1]}/"
        return site

    try:
        yield make
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def graphql(url: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """A query of the webserver at `url` through its GraphQL API, what the UI sends; its errors raise."""
    request = urllib.request.Request(
        f"{url}/graphql", data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=600) as response:
        body = json.loads(response.read())
    if body.get("errors"):
        raise RuntimeError(body["errors"])
    return body["data"]


# --- the stack ----------------------------------------------------------------------------------------


@dataclass
class Stack:
    data_dir: Path
    pg_dir: Path
    database_url: str
    dagster_home: Path
    env: dict[str, str]
    redis_port: int | None = None
    redis: subprocess.Popen | None = None
    dagster: DagsterProcess | None = None
    instance: dg.DagsterInstance | None = None
    embeddings: EmbeddingServer | None = None
    """The fake OpenAI embeddings server the stack's embedder calls, where a test gave one."""

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

    def graphql(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        return graphql(self.dagster.url, query, variables)

    # Redis (only where the stack was started with a Redis of its own)
    def start_redis(self) -> None:
        self.redis = subprocess.Popen(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.data_dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis(port=self.redis_port)
        wait_for("redis-server", client.ping, interval=0.5, on_error=redis.ConnectionError)

    def kill_redis(self) -> None:
        if self.redis is not None:
            self.redis.kill()
            self.redis.wait()
            self.redis = None

    # PostgreSQL
    def stop_postgres(self) -> None:
        stop_embedded_server(self.pg_dir)

    def start_postgres(self) -> None:
        """In a new process, as any process of the stack finding it stopped would."""
        code = "import sys; from pathlib import Path; from pilito_pipeline.store.server import embedded_server_uri;" \
               " print(embedded_server_uri(Path(sys.argv[1])))"
        out = subprocess.run([sys.executable, "-c", code, str(self.pg_dir)], check=True, capture_output=True,
                             text=True, env=self.env, timeout=DEADLINE).stdout.strip().splitlines()[-1]
        assert out == self.database_url, (out, self.database_url)

    # websites and runs
    def register(self, tenant: str, url: str, max_pages: int = 200) -> int:
        with connect(self.database_url) as conn:
            website_id = register_website(conn, tenant, url, max_pages=max_pages).id
            conn.commit()
        return website_id

    def page_runs(self, tenant: str | None = None) -> list[dg.RunRecord]:
        tags = {RUN_KIND_TAG: "pages", **({TENANT_TAG: tenant} if tenant else {})}
        return list(self.instance.get_run_records(filters=dg.RunsFilter(tags=tags)))

    def runs(self) -> list[dg.RunRecord]:
        return list(self.instance.get_run_records())

    def run_keys(self, record: dg.RunRecord, order: list[str]) -> list[str]:
        """The page keys a range run covers, in the partition order given."""
        tags = record.dagster_run.tags
        first, last = order.index(tags[PARTITION_RANGE_START_TAG]), order.index(tags[PARTITION_RANGE_END_TAG])
        return order[first : last + 1]

    def partition_order(self) -> list[str]:
        return self.instance.get_dynamic_partitions(pages_partitions.name)

    def running_run(self, tenant: str, kind: str) -> dg.DagsterRun:
        """The tenant's STARTED run of `kind` (`crawl` or `pages`)."""
        def probe() -> dg.DagsterRun | None:
            runs = self.instance.get_runs(
                filters=dg.RunsFilter(
                    statuses=[dg.DagsterRunStatus.STARTED], tags={TENANT_TAG: tenant, RUN_KIND_TAG: kind}
                )
            )
            return runs[0] if runs else None

        return wait_for(f"a STARTED {kind} run of tenant {tenant}", probe, interval=0.5)

    # knowledge
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
        wait_for(f"{tenant} fully processed ({what})", lambda: self.fully_processed(tenant, expected),
                 interval=0.5, on_error=(psycopg.OperationalError,),
                 diagnostics=lambda: f"gap={self.knowledge_gap(tenant, expected)}\n{self.log_tail()}")
        return time.monotonic()


def write_dagster_yaml(home: Path, run_monitoring: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> Path:
    """The project's dagster.yaml in `home`, its run monitoring settings overridden by `run_monitoring`
    and its top-level keys by `extra` (a run launcher, say)."""
    config = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    config["run_monitoring"] = {**config["run_monitoring"], **run_monitoring}
    config.update(extra or {})
    home.mkdir(parents=True, exist_ok=True)
    path = home / "dagster.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """`values` in os.environ (the test's own reads: settings, the Dagster instance) until exit."""
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextmanager
def dagster_stack(
    data_dir: Path, env: Mapping[str, str], run_monitoring: Mapping[str, Any] | None = None,
    own_redis: bool = False, instance_config: Mapping[str, Any] | None = None,
) -> Iterator[Stack]:
    """Start the database, Redis where `own_redis`, and Dagster on `data_dir`; `env` adds settings
    (crawl rate, embedder...); `run_monitoring` overrides dagster.yaml's (FAST_RUN_MONITORING), and
    `instance_config` its top-level keys (the Celery run launcher)."""
    # The server's own folder outside pytest's temporary root: another pytest session resets that
    # root to mode 0700 (or prunes it), and the server runs as another user that must traverse it.
    pg_dir = Path(tempfile.mkdtemp(prefix="pilito-stack-pg-"))
    try:
        database_url = embedded_server_uri(pg_dir)
        home = data_dir / "dagster_home"
        write_dagster_yaml(home, run_monitoring or {}, instance_config)
        redis_port = free_port() if own_redis else None
        stack_env = {
            "DATABASE_URL": database_url, "PILITO_DATA_DIR": str(data_dir),
            "DAGSTER_HOME": str(home), "DAGSTER_POSTGRES_URL": ensure_dagster_database(database_url),
            **({"REDIS_URL": f"redis://127.0.0.1:{redis_port}/0"} if own_redis else {}), **env,
        }
        with _environment(stack_env):
            migrate(database_url, embedding_dimension=settings_from_env().embedding_dimension)
            stack = Stack(data_dir, pg_dir, database_url, home, dict(os.environ), redis_port)
            try:
                if own_redis:
                    stack.start_redis()
                stack.start_dagster()
                stack.instance = dg.DagsterInstance.from_config(str(home))
                yield stack
            finally:
                stack.stop_dagster()
                stack.kill_redis()
                if stack.instance is not None:
                    stack.instance.dispose()
    finally:
        stop_embedded_server(pg_dir)
        shutil.rmtree(pg_dir, ignore_errors=True)
