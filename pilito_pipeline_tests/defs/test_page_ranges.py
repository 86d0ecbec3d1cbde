from pilito_pipeline.defs.sensors import page_ranges
from pilito_pipeline.store.pages import PendingPage


def pending(key: str, tenant: str, content_hash: str = "h") -> PendingPage:
    return PendingPage(key, tenant, 1, f"http://x/{key}", content_hash, {})


def keys(ranges) -> list[tuple[str, list[str]]]:
    return [(r.tenant_id, [p.partition_key for p in r.pages]) for r in ranges]


def test_ranges_never_cover_a_page_that_is_not_pending_or_of_another_tenant() -> None:
    order = ["p1", "p2", "p3", "p4", "p5", "p6", "p7"]
    pages = [pending("p1", "a"), pending("p2", "a"), pending("p4", "a"), pending("p5", "b"), pending("p6", "a")]
    assert keys(page_ranges(pages, order)) == [
        ("a", ["p1", "p2"]),  # p3 is not pending: the range stops
        ("a", ["p4"]),
        ("b", ["p5"]),  # tenant changes: a new range (and a new tenant tag)
        ("a", ["p6"]),
    ]


def test_ranges_are_capped_and_follow_partition_order_not_id_order() -> None:
    order = ["p9", "p3", "p4", "p8"]
    pages = [pending(k, "a") for k in ("p3", "p4", "p8", "p9")]
    assert keys(page_ranges(pages, order, max_pages=3)) == [("a", ["p9", "p3", "p4"]), ("a", ["p8"])]


def test_run_key_changes_with_page_text_and_retry_window() -> None:
    (first,) = page_ranges([pending("p1", "a", "h1")], ["p1"])
    (changed,) = page_ranges([pending("p1", "a", "h2")], ["p1"])
    assert first.run_key(1) == first.run_key(1)
    assert first.run_key(1) != changed.run_key(1)
    assert first.run_key(1) != first.run_key(2)


def test_run_key_changes_with_the_embedding_model() -> None:
    (old,) = page_ranges([pending("p1", "a")], ["p1"], embedding_model="model-a")
    (new,) = page_ranges([pending("p1", "a")], ["p1"], embedding_model="model-b")
    assert old.run_key(1) != new.run_key(1)
