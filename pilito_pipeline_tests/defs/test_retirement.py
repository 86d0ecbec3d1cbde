"""Pages are retired only on evidence (issue 10): a 404/410, or no link to them any more after a
clean crawl; an outage on the tenant's side loses nothing; a crawl that would retire too much of
a site waits for the next crawl to confirm it."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest

from pilito_pipeline.app.cli import main
from pilito_pipeline.defs.crawl_assets import website_crawl
from pilito_pipeline.defs.partitions import pages_partitions, websites_partitions
from pilito_pipeline.store.checks import chunks_without_live_page
from pilito_pipeline.store.db import connect
from pilito_pipeline.store.retirement import RETIREMENT_GUARD_SHARE
from pilito_pipeline.store.websites import get_website, register_website
from pilito_pipeline_tests.crawl.conftest import HTML, Response, SeenRequest, Site
from pilito_pipeline_tests.defs.conftest import run_sensors_and_runs

pytestmark = pytest.mark.slow  # each test runs the crawl asset a few times (seconds each)

WORDS = ("river", "lantern", "copper", "meadow", "harbor", "violet", "granite", "falcon", "cedar", "quartz",
         "orchid", "tundra", "saffron", "glacier", "ember", "willow")


def page_text(path: str) -> str:
    """A few distinct sentences per path, long enough to be a page's main text."""
    seed = sum(map(ord, path))
    words = [WORDS[(seed + i * 7) % len(WORDS)] for i in range(12)]
    return " ".join(
        f"The {path} page explains the {a} and {b} service in detail, with prices and opening hours."
        for a, b in itertools.pairwise(words)
    )


class MutableSite(Site):
    """A Site whose pages link to each other; `answer` overrides a path's response for a while."""

    def __init__(self) -> None:
        super().__init__()
        self.links: dict[str, list[str]] = {}
        self.overrides: dict[str, list[Response]] = {}
        self.lock = threading.Lock()

    def publish(self, path: str, links: list[str]) -> None:
        self.links[path] = links
        self.route(path, self.serve)

    def answer(self, path: str, *responses: Response) -> None:
        """The next requests of `path` get these responses, in order; then the page again."""
        with self.lock:
            self.overrides[path] = list(responses)

    def serve(self, request: SeenRequest) -> Response:
        with self.lock:
            queued = self.overrides.get(request.path)
            if queued:
                return queued.pop(0)
        anchors = "".join(f'<li><a href="{link}">{link}</a></li>' for link in self.links[request.path])
        body = (f"<html><head><title>{request.path}</title></head><body><main><h1>{request.path}</h1>"
                f"<p>{page_text(request.path)}</p><ul>{anchors}</ul></main></body></html>")
        return Response(200, {"Content-Type": HTML}, body.encode())


def status_response(status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(status, {"Content-Type": HTML, **(headers or {})}, b"<html><body>unavailable</body></html>")


UNAVAILABLE_FOR_AN_HOUR = status_response(503, {"Retry-After": "3600"})
"""A maintenance answer: the crawler does not wait an hour, so the page fails at once."""


@pytest.fixture
def mutable_site() -> Iterator[MutableSite]:
    served = MutableSite()
    served.thread.start()
    yield served
    served.server.shutdown()
    served.server.server_close()


def hub_site(site: MutableSite, sections: int, leaves_per_section: int) -> list[str]:
    """/ → /s<i> → /s<i>/l<j>; returns every path."""
    section_paths = [f"/s{i}" for i in range(sections)]
    site.publish("/", section_paths)
    paths = ["/", *section_paths]
    for section in section_paths:
        leaves = [f"{section}/l{j}" for j in range(leaves_per_section)]
        site.publish(section, ["/", *leaves])
        for leaf in leaves:
            site.publish(leaf, [section])
        paths += leaves
    return paths


def register_site(database_url: str, site: MutableSite, max_pages: int = 200) -> int:
    with connect(database_url) as conn:
        website = register_website(conn, "hubs", site.url("/"), max_pages=max_pages)
        conn.commit()
    return website.id


def crawl(instance: dg.DagsterInstance, resources: dict[str, Any], website_id: int) -> dict[str, Any]:
    """One materialisation of the crawl asset (no page runs); returns its metadata values."""
    key = f"w{website_id}"
    instance.add_dynamic_partitions(websites_partitions.name, [key])
    outcome = dg.materialize([website_crawl], partition_key=key, instance=instance, resources=resources)
    assert outcome.success
    metadata = outcome.asset_materializations_for_node("website_crawl")[0].metadata
    return {name: value.value for name, value in metadata.items()}


def page_states(database_url: str) -> dict[str, tuple[str, bool]]:
    """Path → (status, holds a document)."""
    with connect(database_url) as conn:
        rows = conn.execute("SELECT url, status, document IS NOT NULL AS live FROM pages").fetchall()
    return {"/" + row["url"].split("/", 3)[3]: (row["status"], row["live"]) for row in rows}


def knowledge_counts(database_url: str) -> tuple[int, int]:
    """(chunks, pages with chunks)."""
    with connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) AS chunks, count(DISTINCT source_id) AS pages FROM tenant_knowledge"
        ).fetchone()
    return row["chunks"], row["pages"]


def test_an_outage_of_the_hub_pages_loses_nothing(
    database_url: str, mutable_site: MutableSite, instance: dg.DagsterInstance, resources: dict[str, Any]
) -> None:
    """Issue 10's reproduction: max_pages 30; the 12 section pages answer 503 once during a re-crawl
    (the home page is fine). Before the fix the crawl counted itself complete and retired the 12
    leaves below them; now every page and chunk stays."""
    paths = hub_site(mutable_site, sections=12, leaves_per_section=1)
    with connect(database_url) as conn:
        register_website(conn, "hubs", mutable_site.url("/"), max_pages=30)
        conn.commit()
    run_sensors_and_runs(instance, resources)
    chunks_before = knowledge_counts(database_url)
    assert chunks_before[1] == len(paths) == 25
    partitions_before = set(instance.get_dynamic_partitions(pages_partitions.name))

    for section in (p for p in paths if p.count("/") == 1 and p != "/"):
        mutable_site.answer(section, UNAVAILABLE_FOR_AN_HOUR)
    with connect(database_url) as conn:
        register_website(conn, "hubs", mutable_site.url("/"), max_pages=30)  # a re-crawl request
        conn.commit()
    launched = run_sensors_and_runs(instance, resources)

    assert launched["crawl_runs"] == 1 and launched["page_runs"] == 0
    assert knowledge_counts(database_url) == chunks_before
    assert set(instance.get_dynamic_partitions(pages_partitions.name)) == partitions_before
    states = page_states(database_url)
    assert all(states[p] == ("failed", True) for p in paths if p.count("/") == 1 and p != "/")
    assert all(states[p][1] and states[p][0] != "gone" for p in paths)
    with connect(database_url) as conn:
        assert chunks_without_live_page(conn, None) == {}


def test_a_404_retires_its_page(
    database_url: str, mutable_site: MutableSite, instance: dg.DagsterInstance, resources: dict[str, Any]
) -> None:
    hub_site(mutable_site, sections=2, leaves_per_section=4)  # 11 pages
    website_id = register_site(database_url, mutable_site)
    crawl(instance, resources, website_id)
    mutable_site.answer("/s0/l0", status_response(404))

    metadata = crawl(instance, resources, website_id)

    assert metadata["pages_retired"] == 1 and metadata["retirement_held"] == "no"
    states = page_states(database_url)
    assert states["/s0/l0"] == ("gone", False)
    assert sum(1 for status, live in states.values() if live) == 10


def test_a_page_its_owner_unlinked_is_retired_after_a_clean_crawl(
    database_url: str, mutable_site: MutableSite, instance: dg.DagsterInstance, resources: dict[str, Any]
) -> None:
    hub_site(mutable_site, sections=2, leaves_per_section=4)
    website_id = register_site(database_url, mutable_site)
    crawl(instance, resources, website_id)
    mutable_site.links["/s1"].remove("/s1/l3")  # still served, no longer linked

    metadata = crawl(instance, resources, website_id)

    assert metadata["pages_retired"] == 1
    assert page_states(database_url)["/s1/l3"] == ("gone", False)


def test_a_crawl_with_a_failed_fetch_retires_nothing_unseen(
    database_url: str, mutable_site: MutableSite, instance: dg.DagsterInstance, resources: dict[str, Any]
) -> None:
    hub_site(mutable_site, sections=2, leaves_per_section=4)
    website_id = register_site(database_url, mutable_site)
    crawl(instance, resources, website_id)
    mutable_site.links["/s1"].remove("/s1/l3")
    mutable_site.answer("/s0/l2", status_response(500))  # a leaf: hides nothing, yet the crawl is not clean

    metadata = crawl(instance, resources, website_id)

    assert metadata["pages_retired"] == 0
    states = page_states(database_url)
    assert states["/s1/l3"] == ("fetched", True) and states["/s0/l2"] == ("failed", True)

    crawl(instance, resources, website_id)  # clean again: now the unlinked page goes
    assert page_states(database_url)["/s1/l3"] == ("gone", False)


def test_a_failed_page_contributes_its_last_known_links(
    database_url: str, mutable_site: MutableSite, instance: dg.DagsterInstance, resources: dict[str, Any]
) -> None:
    """The leaves below a failed section are still reached (and re-fetched) through its stored links."""
    hub_site(mutable_site, sections=2, leaves_per_section=4)
    website_id = register_site(database_url, mutable_site)
    crawl(instance, resources, website_id)
    mutable_site.answer("/s0", UNAVAILABLE_FOR_AN_HOUR)
    requests_before = len(mutable_site.hits("/s0/l1"))

    metadata = crawl(instance, resources, website_id)

    assert metadata["pages_failed"] == 1 and metadata["pages_fetched"] == 10
    assert len(mutable_site.hits("/s0/l1")) == requests_before + 1
    assert page_states(database_url)["/s0/l1"] == ("fetched", True)


def test_a_mass_404_is_held_once_then_retired_when_the_next_crawl_confirms_it(
    database_url: str, mutable_site: MutableSite, instance: dg.DagsterInstance, resources: dict[str, Any],
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    paths = hub_site(mutable_site, sections=2, leaves_per_section=4)  # 11 live pages
    website_id = register_site(database_url, mutable_site)
    crawl(instance, resources, website_id)
    broken = [p for p in paths if "/l" in p][:4]  # 4 of 11 = 36 % > 30 %
    assert len(broken) > RETIREMENT_GUARD_SHARE * len(paths)
    for path in broken:
        mutable_site.answer(path, status_response(404))

    held = crawl(instance, resources, website_id)

    assert held["pages_retired"] == 0
    assert held["retirement_held"].startswith("retirement held: this crawl would retire 4 of 11 live pages")
    states = page_states(database_url)
    assert all(states[p] == ("failed", True) for p in broken)
    with connect(database_url) as conn:
        website = get_website(conn, website_id)
    assert website.retirement_hold == held["retirement_held"]
    assert website.progress["retirement_held"] == held["retirement_held"]
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert main(["status", "--tenant", "hubs"]) == 0
    assert "retirement held: this crawl would retire 4 of 11" in capsys.readouterr().out

    for path in broken:
        mutable_site.answer(path, status_response(404))
    confirmed = crawl(instance, resources, website_id)

    assert confirmed["pages_retired"] == 4 and confirmed["retirement_held"] == "no"
    states = page_states(database_url)
    assert all(states[p] == ("gone", False) for p in broken)
    with connect(database_url) as conn:
        assert get_website(conn, website_id).retirement_hold is None


def test_a_held_retirement_is_dropped_when_the_site_recovers(
    database_url: str, mutable_site: MutableSite, instance: dg.DagsterInstance, resources: dict[str, Any]
) -> None:
    hub_site(mutable_site, sections=2, leaves_per_section=4)
    website_id = register_site(database_url, mutable_site)
    crawl(instance, resources, website_id)
    for path in ("/s0", "/s1"):  # a broken deploy: the sections answer 404, the leaves are not reached
        mutable_site.answer(path, status_response(404))
    held = crawl(instance, resources, website_id)
    assert held["pages_retired"] == 0 and "would retire 10 of 11" in held["retirement_held"]

    recovered = crawl(instance, resources, website_id)  # the deploy was fixed

    assert recovered["pages_retired"] == 0 and recovered["retirement_held"] == "no"
    assert all(live and status == "fetched" for status, live in page_states(database_url).values())
    with connect(database_url) as conn:
        assert get_website(conn, website_id).retirement_hold is None


def test_a_site_larger_than_max_pages_retires_a_removed_page_by_age(
    database_url: str, mutable_site: MutableSite, instance: dg.DagsterInstance, resources: dict[str, Any]
) -> None:
    """Every crawl stops at max_pages, so none is clean and no unlinked page was ever retired
    (issue 19, item 3). Now a page 3 crawls in a row did not reach, over 14 days, goes."""
    hub_site(mutable_site, sections=2, leaves_per_section=4)  # 11 pages
    website_id = register_site(database_url, mutable_site, max_pages=11)
    crawl(instance, resources, website_id)
    mutable_site.links["/s1"] = ["/", "/s1/l0", "/s1/l1", "/s1/l2", "/s1/l9"]  # l3 removed, l9 added
    mutable_site.publish("/s1/l9", ["/s1"])

    for _ in range(2):
        kept = crawl(instance, resources, website_id)
        assert kept["pages_fetched"] == 11 and kept["pages_retired"] == 0
    assert page_states(database_url)["/s1/l3"] == ("fetched", True)
    with connect(database_url) as conn:  # the two crawls that missed it began 15 days ago
        conn.execute("UPDATE pages SET unseen_since = unseen_since - interval '15 days'")
        conn.commit()

    aged = crawl(instance, resources, website_id)

    assert aged["pages_retired"] == 1 and aged["chunks_deleted"] == 0  # no page runs here
    states = page_states(database_url)
    assert states["/s1/l3"] == ("gone", False)
    assert sum(1 for _, live in states.values() if live) == 11


def test_pages_that_turn_noindex_duplicate_non_html_or_unextractable_lose_their_chunks(
    database_url: str, mutable_site: MutableSite, instance: dg.DagsterInstance, resources: dict[str, Any]
) -> None:
    """Before: recorded `skipped` but kept their chunks and values, searchable forever."""
    hub_site(mutable_site, sections=2, leaves_per_section=3)  # 9 pages
    with connect(database_url) as conn:
        register_website(conn, "hubs", mutable_site.url("/"))
        conn.commit()
    run_sensors_and_runs(instance, resources)
    with connect(database_url) as conn:
        keys = {"/" + r["url"].split("/", 3)[3]: r["partition_key"] for r in conn.execute("SELECT url, partition_key FROM pages")}
    chunks_before, pages_with_chunks = knowledge_counts(database_url)
    assert pages_with_chunks == 9

    twin = mutable_site.serve(SeenRequest("/s0/l2", {}, 0.0))
    mutable_site.answer("/s0/l0", Response(200, {"Content-Type": HTML}, (
        b'<html><head><meta name="robots" content="noindex"></head><body><main><p>'
        + page_text("/s0/l0").encode() + b"</p></main></body></html>")))
    mutable_site.answer("/s0/l1", twin)  # the same text as /s0/l2, which already holds it
    mutable_site.answer("/s1/l0", Response(200, {"Content-Type": "application/pdf"}, b"%PDF-1.7 ..."))
    mutable_site.answer("/s1/l1", Response(200, {"Content-Type": HTML}, b"<html><body><p>Soon.</p></body></html>"))
    with connect(database_url) as conn:
        register_website(conn, "hubs", mutable_site.url("/"))  # a re-crawl request
        conn.commit()
    launched = run_sensors_and_runs(instance, resources)  # the page runs' checks include no_chunks_of_removed_pages

    removed = [keys[p] for p in ("/s0/l0", "/s0/l1", "/s1/l0", "/s1/l1")]
    assert launched["page_runs"] == 0
    with connect(database_url) as conn:
        left = conn.execute(
            "SELECT (SELECT count(*) FROM tenant_knowledge WHERE source_id = ANY(%(k)s)) AS chunks,"
            " (SELECT count(*) FROM pages WHERE partition_key = ANY(%(k)s) AND status = 'skipped'"
            "   AND document IS NULL AND processed_hash IS NULL AND NOT partition_registered) AS withdrawn",
            {"k": removed},
        ).fetchone()
        assert chunks_without_live_page(conn, None) == {}
    assert left == {"chunks": 0, "withdrawn": 4}
    assert knowledge_counts(database_url)[1] == 5
    assert not set(removed) & set(instance.get_dynamic_partitions(pages_partitions.name))

    launched = run_sensors_and_runs(instance, resources)  # they are not pending either
    assert launched == {"crawl_runs": 0, "page_runs": 0, "embeddings_computed": 0, "embeddings_reused": 0}

    with connect(database_url) as conn:
        register_website(conn, "hubs", mutable_site.url("/"))  # the owner undoes it: indexed again
        conn.commit()
    launched = run_sensors_and_runs(instance, resources)
    assert launched["page_runs"] >= 1 and knowledge_counts(database_url) == (chunks_before, 9)
