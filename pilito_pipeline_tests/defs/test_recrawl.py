"""Incremental re-crawl through Dagster: unchanged pages cost nothing, a changed page replaces
exactly its chunks, a deleted page loses its chunks and its partition."""

from __future__ import annotations

import functools
import os
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from pilito_pipeline.defs.partitions import pages_partitions
from pilito_pipeline.store.db import connect
from pilito_pipeline_tests.defs.conftest import register, run_sensors_and_runs

pytestmark = pytest.mark.slow

TOPICS = {
    "hours": ("ساعات کاری", "دفتر ما از شنبه تا چهارشنبه از ساعت ۹ صبح تا ۵ عصر باز است و پنجشنبه‌ها تا ظهر کار می‌کند."),
    "delivery": ("Delivery", "We deliver across Tehran within two working days; orders above five million rials ship free."),
    "warranty": ("گارانتی", "همه دستگاه‌ها دو سال گارانتی رسمی دارند و تعمیر در مرکز خدمات شرکت انجام می‌شود."),
}


def write_page(root: Path, name: str, title: str, body: str, mtime_shift: int = 0) -> None:
    paragraphs = "".join(f"<p>{body} {i}</p>" for i in range(3))
    path = root / f"{name}.html"
    path.write_text(
        f"<html><head><title>{title}</title></head><body><nav>Home | About</nav>"
        f"<main><h1>{title}</h1><h2>{title}</h2>{paragraphs}</main><footer>© shop</footer></body></html>",
        encoding="utf-8",
    )
    stat = path.stat()
    os.utime(path, (stat.st_atime + mtime_shift, stat.st_mtime + mtime_shift))


@pytest.fixture
def site(tmp_path: Path) -> Any:
    for name, (title, body) in TOPICS.items():
        write_page(tmp_path, name, title, body)
    links = "".join(f'<li><a href="/{name}.html">{title}</a></li>' for name, (title, _) in TOPICS.items())
    (tmp_path / "index.html").write_text(
        f"<html><head><title>Shop</title></head><body><main><h1>فروشگاه</h1>"
        f"<p>به فروشگاه ما خوش آمدید؛ اطلاعات خدمات را در صفحه‌های زیر بخوانید.</p><ul>{links}</ul></main></body></html>",
        encoding="utf-8",
    )
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield tmp_path, f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()


def chunks_by_url(database_url: str) -> dict[str, list[tuple[str, str]]]:
    with connect(database_url) as conn:
        rows = conn.execute(
            "SELECT document_id, full_text, updated_at::text AS updated FROM tenant_knowledge ORDER BY document_id, chunk_index"
        ).fetchall()
    result: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        result.setdefault(row["document_id"].rsplit("/", 1)[-1], []).append((row["full_text"], row["updated"]))
    return result


def test_recrawl_replaces_changed_and_removes_deleted_pages(
    database_url: str, site: Any, instance: dg.DagsterInstance, resources: dict[str, Any]
) -> None:
    root, url = site
    register(database_url, "shop", url)
    run_sensors_and_runs(instance, resources)
    before = chunks_by_url(database_url)
    assert {"hours.html", "delivery.html", "warranty.html"} <= before.keys()
    partitions_before = instance.get_dynamic_partitions(pages_partitions.name)

    write_page(root, "delivery", "Delivery", "Same-day delivery is now available in all of Tehran.", mtime_shift=60)
    (root / "warranty.html").unlink()
    register(database_url, "shop", url)  # a crawl request, as the re-crawl schedule would make
    launched = run_sensors_and_runs(instance, resources)

    after = chunks_by_url(database_url)
    assert launched["page_runs"] == 1
    assert after["hours.html"] == before["hours.html"]  # untouched, not even rewritten
    assert "warranty.html" not in after
    assert all("Same-day" in text for text, _ in after["delivery.html"] if "Tehran" in text)
    assert not any("two working days" in text for text, _ in after["delivery.html"])
    assert 0 < launched["embeddings_computed"] <= 2 * len(after["delivery.html"])
    partitions_after = instance.get_dynamic_partitions(pages_partitions.name)
    assert len(partitions_after) == len(partitions_before) - 1
    with connect(database_url) as conn:
        rows = conn.execute("SELECT url, status FROM pages").fetchall()
    statuses = {row["url"].rsplit("/", 1)[-1]: row["status"] for row in rows}
    assert statuses["warranty.html"] == "gone"
    assert statuses["hours.html"] == "not_modified"
