"""Reciprocal-rank fusion."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def reciprocal_rank_fusion(
    rankings: Mapping[str, Sequence[int]], k: int = 60, limit: int = 20,
    weights: Mapping[str, float] | None = None,
) -> list[tuple[int, float]]:
    """Fuse ranked id lists: score(id) = sum over lists of weight / (k + rank), rank starting at 1
    (weight 1 unless `weights` names the list: plain RRF). A list of weight 0 contributes nothing:
    neither scores nor candidates of its own.

    Returns at most `limit` (id, score) pairs, best first; ties keep the order of first appearance
    (list order, then rank), so the result is deterministic.
    """
    if k < 1:
        raise ValueError(f"RRF k must be at least 1, got {k}")
    scores: dict[int, float] = {}
    for name, ranking in rankings.items():
        weight = (weights or {}).get(name, 1.0)
        if weight < 0:
            raise ValueError(f"RRF weight of {name!r} must not be negative, got {weight}")
        if weight == 0:
            continue
        seen: set[int] = set()
        for rank, item in enumerate(ranking, start=1):
            if item in seen:
                continue
            seen.add(item)
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
    order = {item: position for position, item in enumerate(scores)}
    fused = sorted(scores.items(), key=lambda pair: (-pair[1], order[pair[0]]))
    return fused[:limit]
