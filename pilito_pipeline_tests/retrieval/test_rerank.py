"""Cross-encoder loading through sentence-transformers, scoring, and the unavailable paths."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from pilito_pipeline.retrieval.rerank import CrossEncoderReranker, RerankUnavailable, resolve_model_name


def test_scores_with_a_locally_built_cross_encoder(tiny_cross_encoder: Path) -> None:
    reranker = CrossEncoderReranker(max_length=64, batch_size=2)
    passages = ["ما بورسیه داریم", "قیمت مناسب", "IELTS course in summer"]
    scores = reranker.score(str(tiny_cross_encoder), "بورسیه دارین؟", passages)
    assert scores.shape == (3,) and scores.dtype == np.float32 and np.all(np.isfinite(scores))
    again = reranker.score(str(tiny_cross_encoder), "بورسیه دارین؟", passages)
    assert np.allclose(scores, again)  # deterministic (eval mode), model loaded once
    assert reranker.load(str(tiny_cross_encoder)) is reranker.load(str(tiny_cross_encoder))
    assert reranker.score(str(tiny_cross_encoder), "q", []).shape == (0,)


def test_unloadable_model_is_reported_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    reranker = CrossEncoderReranker()
    missing = str(tmp_path / "no-model-here")
    with caplog.at_level(logging.WARNING, logger="pilito_pipeline.retrieval.rerank"):
        for _ in range(3):
            with pytest.raises(RerankUnavailable, match="could not be loaded"):
                reranker.score(missing, "q", ["p"])
    assert len([r for r in caplog.records if "could not be loaded" in r.message]) == 1


def test_hub_names_are_never_downloaded(caplog: pytest.LogCaptureFixture) -> None:
    """The seeds' default model by name: no network here, so it must fail fast, not hang."""
    with pytest.raises(RerankUnavailable):
        CrossEncoderReranker().load("base")
    assert resolve_model_name("base") == "BAAI/bge-reranker-base"
    with pytest.raises(RerankUnavailable, match="no rerank model"):
        CrossEncoderReranker().load("")
