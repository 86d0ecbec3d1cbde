"""A crawl retires a page while a page run over it is embedding (issue 19, item 2), through the real
page assets: the run read the page before the retirement and writes after it, and skips the page
instead of bringing it back. The interleaving is forced with a third session holding the page's
source lock, so the crawl's end queues for it first and the page run's write second."""

from __future__ import annotations

import threading
from typing import Any

import dagster as dg
import psycopg
import pytest

from pilito_pipeline.crawl import crawl_website
from pilito_pipeline.ingest.crawl_session import CrawlSession
from pilito_pipeline.defs.partitions import (
    FIRST_REGISTRATION_BATCH,
    REGISTRATION_BATCH,
    RUN_KIND_TAG,
    TENANT_PAGES_TAG,
    register_page_partitions,
)
from pilito_pipeline.store.checks import chunks_without_live_page
from pilito_pipeline.store.db import connect
from pilito_pipeline.store.knowledge import KNOWLEDGE_LOCK_NAMESPACE, source_lock_keys
from pilito_pipeline_tests.defs.conftest import PAGE_ASSETS, run_sensors_and_runs
from pilito_pipeline_tests.defs.test_retirement import MutableSite, hub_site, mutable_site, register_site  # noqa: F401
from pilito_pipeline_tests.waiting import wait_for

pytestmark = pytest.mark.slow


def advisory_waiters(conn: psycopg.Connection) -> int:
    return conn.execute(
        "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    ).fetchone()["n"]


def test_a_page_retired_while_its_page_run_embeds_does_not_come_back(
    database_url: str, mutable_site: MutableSite, instance: dg.DagsterInstance, resources: dict[str, Any]
) -> None:
    hub_site(mutable_site, sections=2, leaves_per_section=4)  # 11 pages
    website_id = register_site(database_url, mutable_site)
    run_sensors_and_runs(instance, resources)
    with connect(database_url, autocommit=True) as watcher:
        key = watcher.execute("SELECT partition_key FROM pages WHERE url = %s",
                              (mutable_site.url("/s1/l3"),)).fetchone()["partition_key"]
        assert watcher.execute("SELECT count(*) AS n FROM tenant_knowledge WHERE source_id = %s",
                               (key,)).fetchone()["n"] > 0
        mutable_site.links["/s1"].remove("/s1/l3")  # the owner unlinks it: the next clean crawl retires it

        blocker = connect(database_url)
        blocker.execute("SELECT pg_advisory_xact_lock(%s, %s)",
                        (KNOWLEDGE_LOCK_NAMESPACE, source_lock_keys([("hubs", "website", key)])[0]))
        outcome: dict[str, Any] = {}

        def crawl() -> None:
            with connect(database_url, autocommit=True) as conn:
                session = CrawlSession(
                    conn, website_id, lambda tx, keys: register_page_partitions(instance, tx, keys),
                    first_batch=FIRST_REGISTRATION_BATCH, batch=REGISTRATION_BATCH,
                )
                for crawled in crawl_website(session.website.url, resources["crawler"].config_for(session.website),
                                             session.stored_validators):
                    session.record(crawled)
                outcome["retirement"], _ = session.finish()

        def page_run() -> None:
            # Tagged as the pages sensor tags a tenant's page run (an untagged run would hand over).
            result = dg.materialize(PAGE_ASSETS, partition_key=key, instance=instance, resources=resources,
                                    tags={RUN_KIND_TAG: "pages", TENANT_PAGES_TAG: "hubs"})
            outcome["metadata"] = result.asset_materializations_for_node("chunk_embeddings")[0].metadata

        crawler = threading.Thread(target=crawl)
        crawler.start()
        wait_for("the crawl's end waiting for the page's lock", lambda: advisory_waiters(watcher) == 1, interval=0.05)
        runner = threading.Thread(target=page_run)
        runner.start()  # reads the page (still live), embeds it, then queues for the same lock
        wait_for("a second lock waiter", lambda: advisory_waiters(watcher) == 2, interval=0.05)
        blocker.commit()
        blocker.close()
        crawler.join(timeout=300)
        runner.join(timeout=300)

        assert outcome["retirement"].retired == [key]
        assert outcome["metadata"]["pages_skipped_stale"].value == 1
        assert outcome["metadata"]["rows_inserted"].value == 0 and outcome["metadata"]["rows_updated"].value == 0
        page = watcher.execute("SELECT status, document IS NULL AS empty, processed_hash FROM pages"
                               " WHERE partition_key = %s", (key,)).fetchone()
        assert page == {"status": "gone", "empty": True, "processed_hash": None}
        assert watcher.execute("SELECT count(*) AS n FROM tenant_knowledge WHERE source_id = %s",
                               (key,)).fetchone()["n"] == 0
        assert chunks_without_live_page(watcher, None) == {}
