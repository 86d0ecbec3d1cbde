"""Choosing page runs: fair per tenant, contiguous in partition order, no page in two queued or
running runs, at most two such runs per tenant."""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import pytest
import yaml
from dagster._core.storage import tags as dagster_tags
from dagster._core.test_utils import create_run_for_test

from pilito_pipeline.defs.partitions import (
    BACKFILL_TAG,
    MAX_RETRIES_TAG,
    PAGE_RUN_PRIORITY,
    PARTITION_RANGE_END_TAG,
    PARTITION_RANGE_START_TAG,
    PARTITION_SEQS_TAG,
    PRIORITY_TAG,
    RUN_KIND_TAG,
    SHARED_RUN_TAG,
    TENANT_PAGES_TAG,
    TENANT_TAG,
    crawl_run_tags,
    page_run_tags,
    pages_partitions,
    run_partition_seqs,
    run_tenants,
    register_page_partitions,
)
from pilito_pipeline.defs.recovery import RECOVERED_TAG, WORKER_GONE
from pilito_pipeline.defs.resources import DatabaseResource, EmbeddingResource
from pilito_pipeline.defs.sensors import (
    FIRST_RUN_PAGES, PAGE_RUN_SLOTS, per_tenant_ranges, pending_pages_sensor, shared_ranges,
)
from pilito_pipeline.settings import PROJECT_ROOT
from pilito_pipeline.store.db import connect
from pilito_pipeline.store.pages import PageRecord, PendingKey, mark_pages_processed, pending_pages, record_page
from pilito_pipeline.store.websites import (
    mark_crawl_finished, mark_crawl_started, register_website, website_id_from_partition_key,
)

MODEL = "all-MiniLM-L6-v2"


def pending(key: str, tenant: str, seq: int, content_hash: str = "h") -> PendingKey:
    return PendingKey(key, tenant, seq, content_hash)


def keys(ranges) -> list[tuple[str, list[str]]]:
    return [(",".join(r.tenant_ids), [p.partition_key for p in r.pages]) for r in ranges]


def test_a_range_stops_at_a_gap_in_registration_order() -> None:
    pages = [pending("p1", "a", 1), pending("p2", "a", 2), pending("p4", "a", 4), pending("p3", "b", 3)]
    # p3 (tenant b) lies between p2 and p4 in partition order: a's range stops before it.
    assert keys(per_tenant_ranges(pages)) == [("a", ["p1", "p2"]), ("b", ["p3"])]


def test_ranges_follow_registration_order_not_ids_and_are_capped() -> None:
    pages = [pending("p9", "a", 10), pending("p3", "a", 11), pending("p4", "a", 12), pending("p8", "a", 13)]
    assert keys(per_tenant_ranges(pages, max_pages=3)) == [("a", ["p9", "p3", "p4"])]


def test_one_range_per_tenant_oldest_registration_first() -> None:
    pages = [pending("p5", "late", 5), pending("p1", "early", 1), pending("p6", "late", 6)]
    assert keys(per_tenant_ranges(pages)) == [("early", ["p1"]), ("late", ["p5", "p6"])]


def test_a_tenant_with_nothing_searchable_yet_gets_a_small_first_run() -> None:
    pages = [pending(f"p{i}", "new", i) for i in range(1, 31)] + [pending(f"p{i}", "old", i) for i in range(31, 61)]
    ranges = list(per_tenant_ranges(pages, new_tenants={"new"}))
    assert [(",".join(r.tenant_ids), len(r.pages)) for r in ranges] == [("new", FIRST_RUN_PAGES), ("old", 30)]


def test_a_tenant_whose_next_run_fills_while_it_is_crawled_gets_it_only_when_full() -> None:
    pages = [pending(f"p{i}", "filling", i) for i in range(1, 11)] + [pending("p11", "other", 11)]
    assert keys(per_tenant_ranges(pages, max_pages=20, crawling_with_open_run={"filling"})) == [("other", ["p11"])]
    ranges = list(per_tenant_ranges(pages, max_pages=10, crawling_with_open_run={"filling"}))
    assert [(",".join(r.tenant_ids), len(r.pages)) for r in ranges] == [("filling", 10), ("other", 1)]


def test_shared_ranges_take_any_tenants_while_registration_order_is_unbroken_and_are_capped() -> None:
    pages = [pending("p1", "a", 1), pending("p2", "b", 2), pending("p3", "a", 3), pending("p4", "c", 4),
             pending("p6", "d", 6), pending("p7", "d", 7), pending("p8", "e", 8)]
    # p5 is not pending (processed, failed alone, or in a run): the run stops before it.
    assert keys(shared_ranges(pages)) == [("a,b,c", ["p1", "p2", "p3", "p4"]), ("d,e", ["p6", "p7", "p8"])]
    assert keys(shared_ranges(pages, max_pages=3)) == [
        ("a,b", ["p1", "p2", "p3"]), ("c", ["p4"]), ("d,e", ["p6", "p7", "p8"])]


def test_run_key_changes_with_page_text_model_and_generation() -> None:
    (first,) = per_tenant_ranges([pending("p1", "a", 1, "h1")])
    (changed,) = per_tenant_ranges([pending("p1", "a", 1, "h2")])
    (other_model,) = per_tenant_ranges([pending("p1", "a", 1, "h1")], embedding_model="model-b")
    assert first.run_key(1) == first.run_key(1)
    assert first.run_key(1) != changed.run_key(1)
    assert first.run_key(1) != other_model.run_key(1)
    assert first.run_key(1) != first.run_key(2)


def test_range_tags_are_the_ones_dagster_reads() -> None:
    """Dagster 1.13 has no public RunRequest argument for a range: if it renames its tags, this fails."""
    assert PARTITION_RANGE_START_TAG == dagster_tags.ASSET_PARTITION_RANGE_START_TAG
    assert PARTITION_RANGE_END_TAG == dagster_tags.ASSET_PARTITION_RANGE_END_TAG
    assert MAX_RETRIES_TAG == dagster_tags.MAX_RETRIES_TAG
    assert PRIORITY_TAG == dagster_tags.PRIORITY_TAG
    assert BACKFILL_TAG == dagster_tags.BACKFILL_ID_TAG
    request = dg.RunRequest(tags=page_run_tags(["acme"], ("p3", 3), ("p9", 12)))
    assert int(request.tags[PRIORITY_TAG]) == PAGE_RUN_PRIORITY > int(crawl_run_tags("acme").get(PRIORITY_TAG, "0"))
    assert request.partition_key_range == dg.PartitionKeyRange("p3", "p9")
    assert run_partition_seqs(request.tags) == (3, 12) and run_partition_seqs({}) is None
    shared = page_run_tags(["acme", "shop"], ("p3", 3), ("p9", 12))
    assert run_tenants(shared) == ["acme", "shop"] and run_tenants(request.tags) == ["acme"]
    assert shared[TENANT_TAG] == shared[TENANT_PAGES_TAG] == "acme,shop" and run_tenants({}) == []


# --- against the database and a real Dagster instance ---------------------------------------------


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def add_pages(database_url: str, instance: dg.DagsterInstance, tenant: str, count: int, first: int = 0) -> list[str]:
    """`count` fetched pages of a site of `tenant` (pages `first`...), registered as partitions in one batch."""
    with connect(database_url) as conn:
        website_id = register_website(conn, tenant, f"https://{tenant}.example/").id
        page_keys = [
            record_page(
                conn, tenant, website_id,
                PageRecord(url=f"https://{tenant}.example/{i}", depth=1, status="fetched",
                           document={"title": str(i)}, content_hash=f"{tenant}-{i}"),
            )[0]
            for i in range(first, first + count)
        ]
        register_page_partitions(instance, conn, page_keys)
        conn.commit()
    return page_keys


def test_pending_pages_are_chosen_per_tenant_oldest_first_and_bounded(
    database_url: str, instance: dg.DagsterInstance
) -> None:
    big = add_pages(database_url, instance, "big", 30)
    small = add_pages(database_url, instance, "small", 3)
    with connect(database_url) as conn:
        chosen = pending_pages(conn, MODEL, pages_per_tenant=10, max_tenants=10)
        assert [p.partition_key for p in chosen] == big[:10] + small  # the big backlog hides no one
        assert [p.tenant_id for p in pending_pages(conn, MODEL, pages_per_tenant=10, max_tenants=1)] == ["big"] * 10
        assert pending_pages(conn, MODEL, pages_per_tenant=10, max_tenants=10, exclude_tenants=["big"]) == chosen[10:]

        mark_pages_processed(conn, {key: f"small-{i}" for i, key in enumerate(small)}, MODEL)
        assert {p.tenant_id for p in pending_pages(conn, MODEL, pages_per_tenant=50, max_tenants=10)} == {"big"}
        # A new embedding model makes processed pages pending again.
        chosen = pending_pages(conn, "another-model", pages_per_tenant=50, max_tenants=10)
        assert {p.partition_key for p in chosen} == set(big + small)


def test_registration_order_matches_dagsters_even_for_a_key_left_registered(
    database_url: str, instance: dg.DagsterInstance
) -> None:
    first = add_pages(database_url, instance, "a", 3)
    add_pages(database_url, instance, "b", 2)
    with connect(database_url) as conn:  # a registration whose transaction never committed
        conn.execute("UPDATE pages SET partition_registered = false WHERE partition_key = %s", (first[0],))
        conn.commit()
        register_page_partitions(instance, conn, [first[0]])
        conn.commit()
        ours = [r["partition_key"] for r in conn.execute(
            "SELECT partition_key FROM pages WHERE partition_registered ORDER BY partition_seq")]
    assert ours == instance.get_dynamic_partitions(pages_partitions.name)


def sensor_requests(database_url: str, instance: dg.DagsterInstance, cursor: str | None = None) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor,
        resources={"database": DatabaseResource(database_url=database_url), "embedder": EmbeddingResource()},
    )
    return pending_pages_sensor(context)


def test_pages_in_a_queued_or_running_run_get_no_other_and_a_tenant_has_at_most_two(
    database_url: str, instance: dg.DagsterInstance
) -> None:
    add_pages(database_url, instance, "a", 4)
    add_pages(database_url, instance, "b", 2)
    result = sensor_requests(database_url, instance)
    assert [r.tags[TENANT_PAGES_TAG] for r in result.run_requests] == ["a", "b"]
    assert result.cursor == "1"
    first_a = result.run_requests[0]
    assert first_a.partition_key_range == dg.PartitionKeyRange(*sorted_keys(instance)[0:4:3])

    create_run_for_test(instance, job_name="__ASSET_JOB", tags=first_a.tags, status=dg.DagsterRunStatus.STARTED)
    # Nothing new: a's pages are all in its running run, b's were requested (not yet created: b again).
    result = sensor_requests(database_url, instance, cursor="1")
    assert [r.tags[TENANT_PAGES_TAG] for r in result.run_requests] == ["b"]

    more = add_pages(database_url, instance, "a", 2)  # a's site grows while its run is running
    result = sensor_requests(database_url, instance, cursor="2")
    assert [r.tags[TENANT_PAGES_TAG] for r in result.run_requests] == ["b", "a"]  # b's pages are older
    queued_a = result.run_requests[1]
    assert queued_a.partition_key_range == dg.PartitionKeyRange(more[0], more[-1])  # only the new pages
    create_run_for_test(instance, job_name="__ASSET_JOB", tags=queued_a.tags, status=dg.DagsterRunStatus.STARTING)

    add_pages(database_url, instance, "a", 2)  # a has two runs queued or running: these wait
    result = sensor_requests(database_url, instance, cursor="3")
    assert [r.tags[TENANT_PAGES_TAG] for r in result.run_requests] == ["b"]
    assert result.cursor == "4"


def test_a_page_run_without_a_known_range_holds_its_tenant(database_url: str, instance: dg.DagsterInstance) -> None:
    add_pages(database_url, instance, "a", 2)
    (request,) = sensor_requests(database_url, instance).run_requests
    tags = {k: v for k, v in request.tags.items() if k != PARTITION_SEQS_TAG}  # a run from before the tag
    create_run_for_test(instance, job_name="__ASSET_JOB", tags=tags, status=dg.DagsterRunStatus.STARTED)
    add_pages(database_url, instance, "a", 2)
    assert sensor_requests(database_url, instance, cursor="1").run_requests == []


def sorted_keys(instance: dg.DagsterInstance) -> list[str]:
    return instance.get_dynamic_partitions(pages_partitions.name)


def test_a_failed_page_run_is_retried_after_a_delay_a_dead_one_at_once(
    database_url: str, instance: dg.DagsterInstance
) -> None:
    add_pages(database_url, instance, "a", 2)
    add_pages(database_url, instance, "b", 2)
    requests = sensor_requests(database_url, instance).run_requests
    create_run_for_test(instance, job_name="__ASSET_JOB", tags=requests[0].tags, status=dg.DagsterRunStatus.FAILURE)
    create_run_for_test(
        instance, job_name="__ASSET_JOB", tags={**requests[1].tags, RECOVERED_TAG: WORKER_GONE},
        status=dg.DagsterRunStatus.FAILURE,
    )
    again = sensor_requests(database_url, instance, cursor="1").run_requests
    assert [r.tags[TENANT_PAGES_TAG] for r in again] == ["b"]  # a waits RETRY_DELAY_SECONDS
    assert again[0].run_key != requests[1].run_key


def test_a_new_sites_first_run_is_small_while_it_is_crawled_and_the_next_takes_the_rest(
    database_url: str, instance: dg.DagsterInstance
) -> None:
    pages = add_pages(database_url, instance, "new", FIRST_RUN_PAGES + 20)
    crawled = add_pages(database_url, instance, "crawled", FIRST_RUN_PAGES + 20)
    with connect(database_url) as conn:
        started = mark_crawl_started(conn, website_id_from_partition_key("w1"))  # "new" is still being crawled
        conn.commit()
    first, whole_site = sensor_requests(database_url, instance).run_requests
    assert whole_site.partition_key_range == dg.PartitionKeyRange(crawled[0], crawled[-1])  # one run
    create_run_for_test(instance, job_name="__ASSET_JOB", tags=whole_site.tags, status=dg.DagsterRunStatus.STARTED)
    assert first.partition_key_range == dg.PartitionKeyRange(pages[0], pages[FIRST_RUN_PAGES - 1])
    create_run_for_test(instance, job_name="__ASSET_JOB", tags=first.tags, status=dg.DagsterRunStatus.STARTED)
    # While the crawl goes on, the next run waits to fill: the crawl's next batch joins it.
    assert sensor_requests(database_url, instance, cursor="1").run_requests == []
    with connect(database_url) as conn:
        mark_crawl_finished(conn, website_id_from_partition_key("w1"), started, {})
        conn.commit()
    (second,) = sensor_requests(database_url, instance, cursor="1").run_requests  # queued behind the first
    assert second.partition_key_range == dg.PartitionKeyRange(pages[FIRST_RUN_PAGES], pages[-1])

def test_a_site_being_crawled_gets_no_partial_run_while_page_runs_wait_in_the_queue(
    database_url: str, instance: dg.DagsterInstance
) -> None:
    for n, tenant in enumerate(("busy-1", "busy-2")):  # page runs of others, waiting for a slot
        create_run_for_test(instance, job_name="__ASSET_JOB", status=dg.DagsterRunStatus.NOT_STARTED,
                            tags=page_run_tags([tenant], (f"x{n}", 1000 + n), (f"x{n}", 1000 + n)))
    pages = add_pages(database_url, instance, "new", FIRST_RUN_PAGES + 3)
    with connect(database_url) as conn:
        started = mark_crawl_started(conn, website_id_from_partition_key("w1"))
        conn.commit()
    # A small first run would wait anyway, while the crawl registers more pages: none yet.
    assert sensor_requests(database_url, instance).run_requests == []
    with connect(database_url) as conn:
        mark_crawl_finished(conn, website_id_from_partition_key("w1"), started, {})
        conn.commit()
    (whole_site,) = sensor_requests(database_url, instance).run_requests
    assert whole_site.partition_key_range == dg.PartitionKeyRange(pages[0], pages[-1])


def queue_page_runs_of_others(instance: dg.DagsterInstance) -> None:
    """`PAGE_RUN_SLOTS` page runs of other tenants waiting for a slot: the queue is deep."""
    for n in range(PAGE_RUN_SLOTS):
        create_run_for_test(instance, job_name="__ASSET_JOB", status=dg.DagsterRunStatus.NOT_STARTED,
                            tags=page_run_tags([f"busy-{n}"], (f"x{n}", 1000 + n), (f"x{n}", 1000 + n)))


def test_on_a_deep_queue_small_sites_share_a_run_whose_tenants_then_get_no_other(
    database_url: str, instance: dg.DagsterInstance
) -> None:
    queue_page_runs_of_others(instance)
    a, b, c = (add_pages(database_url, instance, tenant, n) for tenant, n in (("a", 4), ("b", 2), ("c", 3)))
    crawled = add_pages(database_url, instance, "crawled", 2)
    with connect(database_url) as conn:  # a site still being crawled: its run waits to be full
        started = mark_crawl_started(conn, website_id_from_partition_key("w4"))
        conn.commit()
    (shared,) = sensor_requests(database_url, instance).run_requests
    assert shared.partition_key_range == dg.PartitionKeyRange(a[0], c[-1])
    assert run_tenants(shared.tags) == ["a", "b", "c"] and shared.tags[RUN_KIND_TAG] == "pages"
    assert shared.tags[SHARED_RUN_TAG] == "true"
    create_run_for_test(instance, job_name="__ASSET_JOB", tags=shared.tags, status=dg.DagsterRunStatus.STARTED)

    # While it is queued or running, none of its tenants gets another page run, not even the next.
    add_pages(database_url, instance, "a", 2, first=4)
    more_c = add_pages(database_url, instance, "c", 1, first=3)
    assert sensor_requests(database_url, instance, cursor="1").run_requests == []
    with connect(database_url) as conn:  # the shared run processed its pages
        for tenant, page_keys in (("a", a), ("b", b), ("c", c)):
            processed = {key: f"{tenant}-{i}" for i, key in enumerate(page_keys)}
            mark_pages_processed(conn, processed, EmbeddingResource().model_name)
        conn.commit()
    (finished,) = instance.get_runs(filters=dg.RunsFilter(tags={TENANT_TAG: "a,b,c"}))
    instance.delete_run(finished.run_id)  # it ended: its tenants are free again
    with connect(database_url) as conn:
        mark_crawl_finished(conn, website_id_from_partition_key("w4"), started, {})
        conn.commit()
    (after,) = sensor_requests(database_url, instance, cursor="2").run_requests
    assert run_tenants(after.tags) == ["crawled", "a", "c"]
    assert after.partition_key_range == dg.PartitionKeyRange(crawled[0], more_c[0])


def test_a_burst_of_sites_shares_a_run_and_the_next_waits_while_it_waits_in_the_queue(
    database_url: str, instance: dg.DagsterInstance
) -> None:
    # Three tenants at once: their own runs would not all start at once (PAGE_RUN_SLOTS), so they share.
    add_pages(database_url, instance, "a", 2)
    add_pages(database_url, instance, "b", 2)
    add_pages(database_url, instance, "c", 2)
    (shared,) = sensor_requests(database_url, instance).run_requests
    assert run_tenants(shared.tags) == ["a", "b", "c"]
    waiting = create_run_for_test(instance, job_name="__ASSET_JOB", tags=shared.tags,
                                  status=dg.DagsterRunStatus.NOT_STARTED)
    d = add_pages(database_url, instance, "d", 2)
    add_pages(database_url, instance, "e", 2)
    f = add_pages(database_url, instance, "f", 2)
    assert sensor_requests(database_url, instance, cursor="1").run_requests == []  # they join the next
    instance.delete_run(waiting.run_id)
    create_run_for_test(instance, job_name="__ASSET_JOB", tags=shared.tags, status=dg.DagsterRunStatus.STARTED)
    (following,) = sensor_requests(database_url, instance, cursor="2").run_requests
    assert run_tenants(following.tags) == ["d", "e", "f"]
    assert following.partition_key_range == dg.PartitionKeyRange(d[0], f[-1])


def test_a_failed_shared_run_holds_each_of_its_tenants_for_the_retry_delay(
    database_url: str, instance: dg.DagsterInstance
) -> None:
    queue_page_runs_of_others(instance)
    add_pages(database_url, instance, "a", 2)
    add_pages(database_url, instance, "b", 2)
    (shared,) = sensor_requests(database_url, instance).run_requests
    assert run_tenants(shared.tags) == ["a", "b"]
    create_run_for_test(instance, job_name="__ASSET_JOB", tags=shared.tags, status=dg.DagsterRunStatus.FAILURE)
    assert sensor_requests(database_url, instance, cursor="1").run_requests == []


def test_page_run_slots_are_the_run_queues() -> None:
    config = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    limits = config["concurrency"]["runs"]["tag_concurrency_limits"]
    assert {"key": RUN_KIND_TAG, "value": "pages", "limit": PAGE_RUN_SLOTS} in limits


def test_each_kind_of_run_keeps_a_slot_whatever_the_others_hold() -> None:
    """Crawls and page runs each keep a slot while every other limited kind (the other of the two,
    maintenance runs, a UI backfill's waiting run) holds all it may: no unlimited kind is left."""
    runs = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())["concurrency"]["runs"]
    caps = {(limit["key"], limit.get("value")): limit["limit"] for limit in runs["tag_concurrency_limits"]
            if not isinstance(limit.get("value"), dict)}
    assert set(caps) == {(RUN_KIND_TAG, "crawl"), (RUN_KIND_TAG, "pages"), (RUN_KIND_TAG, "maintenance"),
                         (BACKFILL_TAG, None)}
    for kind in ("crawl", "pages"):
        others = sum(cap for key, cap in caps.items() if key != (RUN_KIND_TAG, kind))
        assert runs["max_concurrent_runs"] - others >= 1, kind
