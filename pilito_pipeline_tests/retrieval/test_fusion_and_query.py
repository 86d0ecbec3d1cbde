"""RRF order and query analysis."""

from __future__ import annotations

import pytest

from pilito_pipeline.retrieval.fusion import reciprocal_rank_fusion
from pilito_pipeline.retrieval.query import analyze_query


def test_rrf_order_matches_hand_computation() -> None:
    fused = reciprocal_rank_fusion({"dense": [1, 2, 3], "bm25": [3, 4, 1]}, k=60, limit=10)
    expected = {1: 1 / 61 + 1 / 63, 2: 1 / 62, 3: 1 / 63 + 1 / 61, 4: 1 / 62}
    assert [i for i, _ in fused] == [1, 3, 2, 4]  # ties broken by first appearance
    assert dict(fused) == pytest.approx(expected)


def test_rrf_k_changes_the_order_and_limit_cuts() -> None:
    # With small k, rank 1 in one list beats ranks 3 + 4 in two lists; with large k it does not.
    rankings = {"dense": [7, 8, 9, 10], "bm25": [5, 6, 10, 9]}
    assert [i for i, _ in reciprocal_rank_fusion(rankings, k=1, limit=10)][:2] == [7, 5]
    assert [i for i, _ in reciprocal_rank_fusion(rankings, k=60, limit=10)][:2] == [9, 10]
    assert len(reciprocal_rank_fusion(rankings, k=60, limit=2)) == 2
    assert reciprocal_rank_fusion({"dense": [], "bm25": []}) == []
    with pytest.raises(ValueError):
        reciprocal_rank_fusion(rankings, k=0)


def test_rrf_weight_zero_list_contributes_nothing() -> None:
    """Not even candidates: a zero-weight arm must not pad the fused list with score-0 noise."""
    fused = reciprocal_rank_fusion({"dense": [1, 2, 3], "bm25": [3, 4]}, k=60, weights={"dense": 0.0})
    assert fused == [(3, pytest.approx(1 / 61)), (4, pytest.approx(1 / 62))]
    assert reciprocal_rank_fusion({"dense": [1, 2]}, weights={"dense": 0.0}) == []
    weighted = dict(reciprocal_rank_fusion({"dense": [1], "bm25": [2]}, k=60, weights={"dense": 0.5, "bm25": 2.0}))
    assert weighted == pytest.approx({1: 0.5 / 61, 2: 2 / 61})
    with pytest.raises(ValueError, match="negative"):
        reciprocal_rank_fusion({"dense": [1]}, weights={"dense": -1.0})


def test_rrf_ignores_repeats_within_one_list() -> None:
    assert dict(reciprocal_rank_fusion({"dense": [1, 1, 2]}, k=60)) == pytest.approx({1: 1 / 61, 2: 1 / 63})


@pytest.mark.parametrize(("text", "language"), [
    ("شهریه دوره آیلتس چقدر است؟", "fa"),
    ("Do you offer scholarships?", "en"),
    ("هزینه IELTS preparation course چقدر است", "mixed"),
])
def test_language(text: str, language: str) -> None:
    assert analyze_query(text).language == language


def test_analysis_uses_the_indexing_tokenizer_and_classifies_complexity() -> None:
    from pilito_pipeline.text import tokenize

    simple = analyze_query("شهریه دوره آیلتس چقدر است؟")
    assert simple.terms == tuple(dict.fromkeys(tokenize("شهریه دوره آیلتس چقدر است؟")))
    assert simple.complexity == "simple"
    complex_ = analyze_query("What does the IELTS course cost? And when do the summer classes start?")
    assert complex_.complexity == "complex" and complex_.language == "en"
    assert analyze_query("شهریه دوره آیلتس و تافل و زمان شروع کلاس‌های تابستانی چیست").complexity == "complex"
    with pytest.raises(ValueError):
        analyze_query("   ")
