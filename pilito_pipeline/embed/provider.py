"""The one interface every embedding provider offers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np


class EmbeddingProvider(Protocol):
    """Turns texts into L2-normalised float32 vectors, batching internally.

    `embed` is for what is stored and searched (passages, chunks, TL;DRs); `embed_queries` for
    search queries. Models trained with a prefix per role (e5's "passage: " / "query: ") add
    it here; for the others the two are the same. A provider with a sparse head (e5's latent
    terms, `embed/latent_terms.py`) also offers `embed_with_latent_terms(texts)` (passages' vectors
    and their `sparse_vector.SparseVector`s, from one pass) and `query_latent_terms(texts)`.
    """

    model_name: str
    """Stored with every chunk (`embedding_model`); a different name means re-embedding."""
    dimension: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Passages: float32 array of shape (len(texts), dimension), rows L2-normalised."""
        ...

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Search queries, in the same shape and space as `embed`."""
        ...


def l2_normalised(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as float32."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)
