"""The one interface every embedding provider offers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class EmbeddingProvider(Protocol):
    """Turns texts into L2-normalised float32 vectors, batching internally.

    `embed` is for what is stored and searched (passages, chunks, TL;DRs); `embed_queries` for
    search queries. Models trained with a prefix per role (e5's "passage: " / "query: ") add
    it here; for the others the two are the same.
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


@dataclass(frozen=True)
class SparseVector:
    """A sparse vector: feature ids ascending, their weights, and the space's size (the latent terms
    of `embed/latent_terms.py`: providers with a sparse head offer `embed_with_latent_terms(texts)`,
    passages' vectors and their latent terms, and `query_latent_terms(texts)`, L2-normalised)."""

    indices: np.ndarray  # int32
    values: np.ndarray  # float32
    dimension: int

    def __post_init__(self) -> None:
        if self.indices.shape != self.values.shape or self.indices.ndim != 1:
            raise ValueError("a sparse vector needs as many indices as values")

    @classmethod
    def of(cls, indices: np.ndarray, values: np.ndarray, dimension: int) -> SparseVector:
        """Ids ascending (any order given), the values scaled to unit length (zero stays zero)."""
        order = np.argsort(indices, kind="stable")
        values = np.asarray(values, dtype=np.float32)[order]
        norm = float(np.linalg.norm(values))
        return cls(np.asarray(indices, dtype=np.int32)[order], values / norm if norm else values, dimension)

    def dot(self, other: SparseVector) -> float:
        common, mine, theirs = np.intersect1d(self.indices, other.indices, assume_unique=True, return_indices=True)
        return float(self.values[mine] @ other.values[theirs]) if len(common) else 0.0


def l2_normalised(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as float32."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)
