"""The evaluation's halves, classes and per-query details (scoring of made-up outcomes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pilito_pipeline.retrieval.evaluate import (
    LabelledQuery,
    QueryOutcome,
    details,
    format_table,
    load_queries,
    query_split,
    score_rows,
)

EVAL_SETS = Path(__file__).resolve().parents[2] / "pilito_pipeline" / "retrieval" / "eval_sets"


def outcome(method: str, query: LabelledQuery, ranking: list[str], context: list[str]) -> QueryOutcome:
    return QueryOutcome(method, query, tuple(ranking), tuple(context), 10.0, method if method != "dense" else "dense_only")


def test_halves_are_fixed_by_id_and_balanced_on_every_set() -> None:
    assert query_split("hi001") == query_split("hi001") in ("tune", "test")
    for path in sorted(EVAL_SETS.glob("*.jsonl")):
        queries = load_queries(path)
        tune = sum(q.split == "tune" for q in queries)
        assert 0.3 <= tune / len(queries) <= 0.7, path.name


def test_rows_per_half_and_class_and_the_details() -> None:
    a = LabelledQuery("q1", "first", ("/a.html",), "spoken")
    b = LabelledQuery("q2", "second", ("/b.html",), "loanword")
    outcomes = {"hybrid": [outcome("hybrid", a, ["/x.html", "/a.html"], ["/x.html"]),
                           outcome("hybrid", b, ["/b.html"], ["/b.html"])]}
    rows = {row.group: row for row in score_rows(outcomes, ["hybrid"], groups=["all", "class"])}
    assert set(rows) == {"all", "spoken", "loanword"}
    assert rows["all"].mrr == pytest.approx(0.75) and rows["all"].in_context == pytest.approx(0.5)
    assert rows["spoken"].mrr == pytest.approx(0.5) and rows["spoken"].in_context == 0.0
    assert rows["loanword"].mrr == 1.0 and rows["loanword"].queries == 1
    halves = score_rows(outcomes, ["hybrid"], groups=["tune", "test"])
    assert sum(row.queries for row in halves) == 2
    assert "spoken" in format_table(list(rows.values()))
    first = details(outcomes)[0]
    assert first["id"] == "q1" and first["class"] == "spoken" and first["split"] == a.split
    assert first["hybrid"] == {"rank": 2, "in_context": False, "top": ["/x.html", "/a.html"], "context": ["/x.html"]}
    json.dumps(details(outcomes), ensure_ascii=False)


def test_class_labels_and_duplicate_ids(tmp_path: Path) -> None:
    informal = load_queries(EVAL_SETS / "handbook_informal_fa.jsonl")
    assert len(informal) >= 150 and {q.label for q in informal} == {"spoken", "loanword", "typo", "short"}
    assert len(load_queries(EVAL_SETS / "crosslingual.jsonl")) >= 40
    assert len(load_queries(EVAL_SETS / "gimp_hubs_en.jsonl")) >= 60
    twice = tmp_path / "twice.jsonl"
    line = json.dumps({"id": "x", "query": "q", "relevant": ["/a.html"]})
    twice.write_text(f"{line}\n{line}\n", encoding="utf-8")
    with pytest.raises(ValueError, match="duplicate query ids x"):
        load_queries(twice)


def test_every_labelled_page_is_in_its_fixture_site() -> None:
    from pilito_pipeline_tests.retrieval.demo_corpus import GIMP_SITE_DIR, HANDBOOK_SITE_DIR

    handbook = {p.name for p in HANDBOOK_SITE_DIR.glob("*.html")}
    gimp = {p.name for p in GIMP_SITE_DIR.glob("*.html")}
    sites = {"handbook_informal_fa": handbook, "gimp_hubs_en": gimp, "crosslingual": handbook | gimp}
    for name, pages in sites.items():
        labelled = {page.lstrip("/") for q in load_queries(EVAL_SETS / f"{name}.jsonl") for page in q.relevant}
        assert labelled <= pages, (name, sorted(labelled - pages)[:5])
