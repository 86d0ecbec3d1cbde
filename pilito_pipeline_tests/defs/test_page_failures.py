"""A page that fails alone costs one page, never its tenant's queue: among good pages, one whose
chunking raises (a document the extractor cannot read back) and one whose texts the embedding
provider refuses (a real OpenAI-compatible server on 127.0.0.1) are recorded with their reasons
while the good pages are stored in the same run; they are tried again after their backoff,
quarantined after `retries.PAGE_ATTEMPTS` attempts, shown in `status`, the run check and the
metrics, and released by `pilito-pipeline retry-pages`; the tenant's later pages keep flowing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest

from pilito_pipeline import retries
from pilito_pipeline.app.cli import main as cli_main
from pilito_pipeline.defs.checks import knowledge_run_checks
from pilito_pipeline.defs.io_managers import run_values_io_manager
from pilito_pipeline.defs.page_assets import chunk_embeddings, page_chunks
from pilito_pipeline.defs.partitions import register_page_partitions
from pilito_pipeline.defs.resources import DatabaseResource, EmbeddingResource
from pilito_pipeline.defs.sensors import pending_pages_sensor
from pilito_pipeline.app.metrics_exporter import ingestion_registry
from pilito_pipeline.app.status import render_status
from pilito_pipeline.store.db import connect
from pilito_pipeline.store.page_failures import quarantined_pages
from pilito_pipeline.store.pages import PageRecord, count_pending, record_page
from pilito_pipeline.store.site_status import site_statuses
from pilito_pipeline.store.websites import register_website
from pilito_pipeline.text import document_hash, extract_document
from pilito_pipeline_tests.embed.openai_server import EmbeddingServer, Failure, running_server

MODEL = "text-embedding-3-small"
POISON = "POISON-INPUT"
UNREADABLE = {"title": "Old", "blocks": [{"kind": "paragraph", "txt": "stored by an older extractor"}]}


@pytest.fixture
def embedding_server() -> Iterator[EmbeddingServer]:
    with running_server() as server:
        server.refuse_inputs_containing = POISON
        yield server


@pytest.fixture
def page_resources(database_url: str, embedding_server: EmbeddingServer) -> dict[str, Any]:
    database = DatabaseResource(database_url=database_url)
    return {
        "database": database,
        "page_values_io_manager": run_values_io_manager,
        "embedder": EmbeddingResource(provider="openai", model=MODEL, dimension=384,
                                      openai_api_key="sk-test", openai_base_url=embedding_server.url),
    }


def html(title: str, body: str) -> str:
    return (f"<html><head><title>{title}</title></head><body><main><h1>{title}</h1><p>{body} This page"
            " tells customers about delivery times, prices and returns in enough words to be indexed.</p>"
            "</main></body></html>")


def add_pages(database_url: str, instance: dg.DagsterInstance, tenant: str,
              pages: list[tuple[str, str | dict]]) -> list[str]:
    """Pages (path, HTML or a raw stored document) of `tenant`'s site, registered in one batch."""
    with connect(database_url) as conn:
        website = conn.execute("SELECT id FROM websites WHERE tenant_id = %s", (tenant,)).fetchone()
        website_id = website["id"] if website else register_website(conn, tenant, f"http://{tenant}.test/").id
        keys = []
        for path, content in pages:
            url = f"http://{tenant}.test/{path}"
            if isinstance(content, dict):
                record = PageRecord(url=url, depth=1, status="fetched", document=content, content_hash=f"raw-{path}")
            else:
                document = extract_document(content, url)
                record = PageRecord(url=url, depth=1, status="fetched", title=document.title,
                                    language=document.language, document=document.to_dict(),
                                    content_hash=document_hash(document))
            keys.append(record_page(conn, tenant, website_id, record)[0])
        register_page_partitions(instance, conn, keys)
        conn.commit()
    return keys


def run_pending_pages(instance: dg.DagsterInstance, resources: dict[str, Any]) -> list[dg.ExecuteInProcessResult]:
    """Sensor ticks and the page runs they request (as the daemon would), each to completion, until
    a tick has nothing to launch."""
    results = []
    sensor_resources = {"database": resources["database"], "embedder": resources["embedder"]}
    while requests := pending_pages_sensor(
        dg.build_sensor_context(instance=instance, resources=sensor_resources)
    ).run_requests:
        for request in requests:
            results.append(dg.materialize([page_chunks, chunk_embeddings, knowledge_run_checks], instance=instance,
                                          resources=resources, tags=request.tags))
    return results


def stored_pages(database_url: str, keys: list[str]) -> set[str]:
    with connect(database_url) as conn:
        rows = conn.execute(
            "SELECT DISTINCT source_id FROM tenant_knowledge WHERE source_id = ANY(%s) AND full_embedding IS NOT NULL",
            (keys,)).fetchall()
    return {r["source_id"] for r in rows}


def failures(database_url: str) -> dict[str, dict[str, Any]]:
    with connect(database_url) as conn:
        rows = conn.execute("SELECT * FROM page_failures ORDER BY partition_key").fetchall()
    return {r["partition_key"]: r for r in rows}


def let_backoff_expire(database_url: str) -> None:
    """Time passes: every waiting page's backoff is over (no test waits on the wall clock)."""
    with connect(database_url) as conn:
        conn.execute("UPDATE page_failures SET retry_at = now() - interval '1 second' WHERE retry_at IS NOT NULL")
        conn.commit()


def test_a_failing_page_costs_one_page_is_backed_off_quarantined_shown_and_released(
    database_url: str, page_resources: dict[str, Any], embedding_server: EmbeddingServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with dg.instance_for_test() as instance:
        good = [(f"good-{i}", html(f"Topic {i}", f"Answer number {i} for our shop.")) for i in range(4)]
        keys = add_pages(database_url, instance, "shop", [
            good[0], ("unreadable", UNREADABLE), good[1], ("poison", html("Poison", f"{POISON} in the text.")),
            *good[2:],
        ])
        unreadable, poison = keys[1], keys[3]
        good_keys = [k for k in keys if k not in (unreadable, poison)]

        (run,) = run_pending_pages(instance, page_resources)

        # One run over all six pages succeeds: the four good pages are stored, the two bad recorded.
        assert run.success
        assert stored_pages(database_url, keys) == set(good_keys)
        recorded = failures(database_url)
        assert set(recorded) == {unreadable, poison}
        assert recorded[unreadable]["reason"].startswith("chunking failed: TypeError")
        assert "embedding request refused" in recorded[poison]["reason"]
        assert "cannot be embedded" in recorded[poison]["reason"]
        assert all(r["attempts"] == 1 and r["retry_at"] is not None for r in recorded.values())
        embeddings = run.asset_materializations_for_node("chunk_embeddings")[0].metadata
        assert embeddings["pages"].value == 4 and embeddings["pages_failed"].value == 1
        assert run.asset_materializations_for_node("page_chunks")[0].metadata["pages_failed"].value == 1

        # While they back off, nothing is launched for them, and the tenant's new pages still flow.
        assert run_pending_pages(instance, page_resources) == []
        later = add_pages(database_url, instance, "shop", [("later", html("Later", "A page added later."))])
        (run,) = run_pending_pages(instance, page_resources)
        assert run.success and stored_pages(database_url, later) == set(later)

        # Each expired backoff gives them another attempt, the wait doubling; the last quarantines them.
        for attempt in range(2, retries.PAGE_ATTEMPTS + 1):
            let_backoff_expire(database_url)
            runs = run_pending_pages(instance, page_resources)
            assert len(runs) == 2 and all(r.success for r in runs)  # two ranges: a stored page lies between
            recorded = failures(database_url)
            assert {r["attempts"] for r in recorded.values()} == {attempt}
            delay = retries.PAGE_RETRY_DELAY_SECONDS * 2 ** (attempt - 1)
            for r in recorded.values():
                if attempt < retries.PAGE_ATTEMPTS:
                    assert delay - 5 <= (r["retry_at"] - r["failed_at"]).total_seconds() <= delay + 5
        assert all(r["quarantined_at"] is not None and r["retry_at"] is None for r in recorded.values())
        checks = {c.check_name: c for c in runs[-1].get_asset_check_evaluations()}
        assert checks["no_quarantined_pages"].severity == dg.AssetCheckSeverity.WARN
        assert checks["no_quarantined_pages"].metadata["count"].value == 2
        assert all(c.passed for name, c in checks.items() if name != "no_quarantined_pages")

        # Quarantined: never launched again, visible in status and metrics.
        let_backoff_expire(database_url)
        assert run_pending_pages(instance, page_resources) == []
        with connect(database_url) as conn:
            assert count_pending(conn, keys, MODEL) == 0  # a UI backfill does not wait for them
            assert {p.partition_key for p in quarantined_pages(conn, MODEL, tenant_id="shop")} == {unreadable, poison}
            (site,) = site_statuses(conn, "shop", embedding_model=MODEL)
        assert site.quarantined == 2
        screen = render_status([site])
        assert "quarantined: 2 pages" in screen and "retry-pages --tenant shop" in screen
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in ingestion_registry(instance).collect() for s in family.samples}
        assert samples[("page_process_total", (("status", "failed"),))] == 2 * retries.PAGE_ATTEMPTS
        assert samples[("pages_quarantined_total", ())] == 2

        # Released once the cause is fixed: the next tick runs them, the fixed one is stored.
        embedding_server.refuse_inputs_containing = ""
        monkeypatch.setenv("DATABASE_URL", database_url)
        assert cli_main(["retry-pages", "--tenant", "shop"]) == 0
        runs = run_pending_pages(instance, page_resources)
        assert runs and all(r.success for r in runs)
        assert stored_pages(database_url, keys) == set(good_keys) | {poison}
        assert set(failures(database_url)) == {unreadable}  # still unreadable: attempt 1 again
        assert failures(database_url)[unreadable]["attempts"] == 1


def test_a_provider_that_refuses_everything_fails_the_run_and_blames_no_page(
    database_url: str, page_resources: dict[str, Any], embedding_server: EmbeddingServer
) -> None:
    with dg.instance_for_test() as instance:
        add_pages(database_url, instance, "shop", [(f"p{i}", html(f"T{i}", f"Body {i}.")) for i in range(3)])
        embedding_server.always_fail = Failure(401, message="Incorrect API key provided")
        (run,) = (dg.materialize([page_chunks, chunk_embeddings], instance=instance, resources=page_resources,
                                 tags=request.tags, raise_on_error=False)
                  for request in pending_pages_sensor(dg.build_sensor_context(
                      instance=instance, resources={k: page_resources[k] for k in ("database", "embedder")},
                  )).run_requests)
        assert not run.success
        assert len(embedding_server.authorizations) == 1
        assert failures(database_url) == {}


def test_a_page_failure_counts_for_its_text_new_text_is_tried_at_once(
    database_url: str, page_resources: dict[str, Any]
) -> None:
    with dg.instance_for_test() as instance:
        (key,) = add_pages(database_url, instance, "shop", [("poison", html("Poison", f"{POISON} here."))])
        (run,) = run_pending_pages(instance, page_resources)
        assert run.success and failures(database_url)[key]["attempts"] == 1
        assert run_pending_pages(instance, page_resources) == []  # backing off
        with connect(database_url) as conn:  # the owner fixes the page; the next crawl stores its new text
            website_id = conn.execute("SELECT website_id FROM pages WHERE partition_key = %s", (key,)).fetchone()[
                "website_id"]
            document = extract_document(html("Poison", "Fixed text."), "http://shop.test/poison")
            record_page(conn, "shop", website_id, PageRecord(
                url="http://shop.test/poison", depth=1, status="fetched", document=document.to_dict(),
                content_hash=document_hash(document)))
            conn.commit()
        (run,) = run_pending_pages(instance, page_resources)
        assert run.success and stored_pages(database_url, [key]) == {key} and failures(database_url) == {}
