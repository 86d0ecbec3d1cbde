"""Fusion (evidence and RRF) and query analysis."""

from __future__ import annotations

import pytest

from pilito_pipeline.retrieval.fusion import evidence_fusion, latent_evidence, reciprocal_rank_fusion
from pilito_pipeline.retrieval.query import analyze_query


def test_evidence_fusion_matches_hand_computation() -> None:
    dense = [(1, 0.95), (2, 0.85), (3, 0.70)]
    bm25 = [(3, 10.0), (4, 3.0)]
    fused = dict(evidence_fusion(dense, bm25, dense_floor=0.8, bm25_ceiling=16.0))
    assert fused == pytest.approx({1: 0.75, 2: 0.25, 3: 0.625, 4: 0.1875})
    assert [i for i, _ in evidence_fusion(dense, bm25, dense_floor=0.8, bm25_ceiling=16.0)] == [1, 3, 2, 4]
    weighted = dict(evidence_fusion(dense, bm25, dense_weight=2.0, bm25_weight=0.5, bm25_ceiling=16.0))
    assert weighted[1] == pytest.approx(1.5) and weighted[4] == pytest.approx(0.09375)


def test_a_blind_arm_does_not_push_down_a_confident_one() -> None:
    """Dense is sure of page 1; BM25 matched almost nothing of the query (its best score is a
    small share of the ceiling). RRF puts BM25's guesses first; evidence fusion keeps page 1."""
    dense = [(1, 0.93), (2, 0.82), (3, 0.81)]
    bm25 = [(7, 1.0), (8, 0.9), (2, 0.8)]
    assert reciprocal_rank_fusion({"dense": [i for i, _ in dense], "bm25": [i for i, _ in bm25]}, k=20)[0][0] == 2
    assert evidence_fusion(dense, bm25, bm25_ceiling=20.0)[0][0] == 1
    # BM25 matched every term the site knows: its first result wins over a lukewarm dense list.
    assert evidence_fusion([(1, 0.84), (2, 0.83)], [(7, 19.0), (2, 5.0)], bm25_ceiling=20.0)[0][0] == 7


def test_latent_terms_add_evidence_from_their_floor() -> None:
    dense = [(1, 0.95), (2, 0.85)]
    latent = [(2, 0.45), (5, 0.30), (6, 0.20)]
    fused = dict(evidence_fusion(dense, [], latent=latent, latent_weight=0.75, latent_floor=0.25))
    assert fused == pytest.approx({1: 0.75, 2: 0.25 + 0.75 * 0.2 / 0.75, 5: 0.75 * 0.05 / 0.75, 6: 0.0})
    assert 5 not in dict(evidence_fusion(dense, [], latent=latent, latent_weight=0.0, latent_floor=0.25))
    with pytest.raises(ValueError, match="latent_floor"):
        evidence_fusion([], [], latent_floor=1.0)


def test_a_blind_dense_arm_lets_the_latent_ranking_decide_across_languages() -> None:
    """A Persian question about an English page: no chunk is close in the dense space, the latent
    terms' cosines are all low; scored against their own best, the latent arm's first result leads."""
    latent = [(7, 0.24), (8, 0.20), (9, 0.12)]
    blind = [(1, 0.84), (2, 0.83)]
    options = dict(floor=0.25, blind_below=0.85, relative_floor=0.7)
    scores, floor = latent_evidence(blind, latent, across_languages=True, **options)
    assert floor == 0.7 and dict(scores) == pytest.approx({7: 1.0, 8: 0.2 / 0.24, 9: 0.5})
    assert evidence_fusion(blind, [], latent=scores, latent_weight=0.75, latent_floor=floor)[0][0] == 7
    assert latent_evidence([], latent, across_languages=True, **options)[1] == 0.7  # no dense list
    # the same language as the question, dense close to a chunk, or no latent list: cosines as they are
    assert latent_evidence(blind, latent, across_languages=False, **options) == (latent, 0.25)
    assert latent_evidence([(1, 0.93)], latent, across_languages=True, **options) == (latent, 0.25)
    assert latent_evidence(blind, [], across_languages=True, **options) == ([], 0.25)


def test_evidence_fusion_edges() -> None:
    assert evidence_fusion([], []) == []
    # No known BM25 term (ceiling 0): its candidates add nothing, but still come after dense's.
    assert evidence_fusion([(1, 0.9)], [(5, 3.0)], bm25_ceiling=0.0) == [(1, 0.5), (5, 0.0)]
    assert evidence_fusion([(1, 0.9)], [(5, 3.0)], bm25_weight=0.0, bm25_ceiling=4.0) == [(1, 0.5)]
    assert [i for i, _ in evidence_fusion([(1, 0.9), (2, 0.9)], [(3, 9.0)], bm25_ceiling=1.0, limit=2)] == [3, 1]
    with pytest.raises(ValueError, match="dense_floor"):
        evidence_fusion([], [], dense_floor=1.0)
    with pytest.raises(ValueError, match="negative"):
        evidence_fusion([], [], dense_weight=-1.0)


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
