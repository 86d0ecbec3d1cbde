"""No transaction is held across the network (issue 19, item 4): the crawl commits every page it
records, so a polite crawl (robots `Crawl-delay: 3`) leaves no session of ours `idle in
transaction` between its fetches. Measured from the transaction's start (`xact_start`): a crawl that
sends a statement per fetch resets `state_change` every few seconds while its transaction stays open."""

from __future__ import annotations

import threading
from typing import Any

import dagster as dg
import pytest

from pilito_pipeline.store.db import connect
from pilito_pipeline_tests.crawl.conftest import Site, site  # noqa: F401 (the fixture)
from pilito_pipeline_tests.defs.test_retirement import crawl, page_text, register_site

pytestmark = pytest.mark.slow  # about 20 s: six fetches 3 s apart

LONGEST_IDLE_IN_TRANSACTION = """
SELECT coalesce(max(extract(epoch FROM clock_timestamp() - xact_start)), 0) AS seconds
FROM pg_stat_activity
WHERE datname = current_database() AND state LIKE 'idle in transaction%%' AND pid <> pg_backend_pid()
"""


def test_no_session_is_idle_in_transaction_while_a_crawl_waits_out_its_crawl_delay(
    database_url: str, site: Site, instance: dg.DagsterInstance, resources: dict[str, Any]
) -> None:
    site.add("/robots.txt", "User-agent: *\nCrawl-delay: 3\n", content_type="text/plain")
    leaves = [f"/leaf{i}" for i in range(5)]
    site.page("/", leaves, text=page_text("/"))
    for leaf in leaves:
        site.page(leaf, ["/"], text=page_text(leaf))
    website_id = register_site(database_url, site)
    longest: list[float] = []
    done = threading.Event()

    def watch() -> None:
        with connect(database_url, autocommit=True) as conn:
            while not done.is_set():
                longest.append(float(conn.execute(LONGEST_IDLE_IN_TRANSACTION).fetchone()["seconds"]))
                done.wait(0.1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        metadata = crawl(instance, resources, website_id)
    finally:
        done.set()
        watcher.join(timeout=60)

    assert metadata["pages_fetched"] == 6
    arrivals = [request.at for request in site.requests if request.path != "/robots.txt"]
    assert arrivals[-1] - arrivals[0] >= 5 * 3 * 0.5  # the crawl did wait between its fetches
    assert len(longest) > 20 and max(longest) < 5.0, max(longest)
    print(f"longest transaction of ours open and idle during the crawl: {max(longest):.3f} s")
