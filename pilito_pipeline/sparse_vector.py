"""A sparse vector (ids and weights), shared by the embedder that makes latent terms and the
store that keeps them, so neither package imports the other for it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SparseVector:
    """Feature ids ascending, their weights, and the space's size (e5's latent terms, L2-normalised:
    `embed/latent_terms.py`)."""

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
