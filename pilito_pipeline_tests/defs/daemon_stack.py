"""The real thing for orchestration tests and benchmarks: an embedded PostgreSQL of its own, and
`dagster dev` (webserver + daemon + run queue) with the project's dagster.yaml on Postgres storage,
plus generated sites served on 127.0.0.1 and what the tests ask of the runs."""

from __future__ import annotations

import functools
import json
import os
import random
import shutil
import socket
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg

from pilito_pipeline.defs.partitions import (
    PARTITION_RANGE_END_TAG,
    PARTITION_RANGE_START_TAG,
    RUN_KIND_TAG,
    TENANT_TAG,
    pages_partitions,
)
from pilito_pipeline.app.dagster_process import DagsterProcess, ensure_dagster_database, start_dagster
from pilito_pipeline.settings import settings_from_env
from pilito_pipeline.store.db import connect
from pilito_pipeline.store.migrate import migrate
from pilito_pipeline.store.server import embedded_server_uri, stop_embedded_server
from pilito_pipeline.store.websites import register_website

T = TypeVar("T")
DEADLINE = 900.0
"""Every wait: many minutes, so a loaded machine is slow, not failing."""

WORDS_EN = (
    "course price teacher exam schedule online campus library workshop certificate students lesson "
    "grammar speaking listening writing reading term scholarship office hours register weekend"
).split()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = DEADLINE, interval: float = 0.25) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def generate_site(root: Path, pages: int, name: str = "site", seed: int = 7) -> None:
    """`pages` HTML pages of distinct English text, linked as a tree of fan-out 10 from index.html."""
    rng = random.Random(f"{name}-{seed}")
    root.mkdir(parents=True, exist_ok=True)
    for i in range(pages):
        children = range(10 * i + 1, min(10 * i + 11, pages))
        links = "".join(f'<a href="/page{j}.html">page {j}</a> ' for j in children)
        paragraphs = "".join(
            "<p>" + " ".join(rng.choice(WORDS_EN) for _ in range(60)) + f" {name} page {i}.</p>" for _ in range(3)
        )
        (root / f"page{i}.html").write_text(
            f"<html lang='en'><head><title>{name} page {i}</title></head><body><nav>{links}</nav>"
            f"<main><h1>{name} page {i}</h1>{paragraphs}</main></body></html>",
            encoding="utf-8",
        )
    (root / "index.html").write_text('<html><body><a href="/page0.html">start</a></body></html>', encoding="utf-8")


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


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def served(root: Path) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class DaemonStack:
    data_dir: Path
    database_url: str
    instance: dg.DagsterInstance
    dagster: DagsterProcess

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

    def graphql(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        return graphql(self.dagster.url, query, variables)

    def log_tail(self) -> str:
        path = self.dagster.log_path
        return path.read_text(errors="replace")[-6000:] if path.exists() else ""


@contextmanager
def daemon_stack(data_dir: Path, env: dict[str, str]) -> Iterator[DaemonStack]:
    """Start the database and Dagster on `data_dir`; `env` adds settings (crawl rate, embedder...)."""
    # The server's own folder outside pytest's temporary root: another pytest session resets that
    # root to mode 0700, and the server runs as another user that must traverse it.
    pg_dir = Path(tempfile.mkdtemp(prefix="pilito-stack-pg-"))
    database_url = embedded_server_uri(pg_dir)
    saved = dict(os.environ)
    try:
        os.environ.update({"DATABASE_URL": database_url, "PILITO_DATA_DIR": str(data_dir), **env})
        settings = settings_from_env()
        migrate(database_url, embedding_dimension=settings.embedding_dimension)
        dagster = start_dagster(settings, database_url, port=free_port())
        instance = None
        try:
            home = settings.data_dir / "dagster_home"  # the instance `start_dagster` prepared, for our own reads
            os.environ.update({"DAGSTER_HOME": str(home), "DAGSTER_POSTGRES_URL": ensure_dagster_database(database_url)})
            dagster.wait_until_ready(timeout=DEADLINE)
            instance = dg.DagsterInstance.from_config(str(home))
            yield DaemonStack(data_dir, database_url, instance, dagster)
        finally:
            dagster.stop()
            if instance is not None:
                instance.dispose()
    finally:
        stop_embedded_server(pg_dir)
        shutil.rmtree(pg_dir, ignore_errors=True)
        os.environ.clear()
        os.environ.update(saved)
