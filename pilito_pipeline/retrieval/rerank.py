"""Cross-encoder reranking (sentence-transformers `CrossEncoder`), loaded once per model, never downloaded.

A model that cannot be loaded (not configured, not on disk, no network for a hub name) is reported
once in the log and remembered, and the caller keeps the fused order. Reloading is retried after
`retry_seconds`, so a model copied into place later is picked up without a restart.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pilito_pipeline.retrieval.flags import RERANK_MODEL_ALIASES

log = logging.getLogger(__name__)


class RerankUnavailable(RuntimeError):
    """No cross-encoder could be used; the message says why (safe to log and to return)."""


def resolve_model_name(name: str) -> str:
    """The seeds' aliases (`base`, `large`) to hub names; names and paths unchanged."""
    return RERANK_MODEL_ALIASES.get(name.strip(), name.strip())


def rerank_passage(section_title: str, text: str, tldr: str, mode: str) -> str:
    """What the cross-encoder reads beside the query: the section title and the TL;DR ("tldr",
    falling back to the text when there is none) or the full text ("full")."""
    body = tldr if mode == "tldr" and tldr.strip() else text
    return f"{section_title}. {body}" if section_title else body


def model_label(name: str) -> str:
    """A short, bounded metrics label for a configured model (a path becomes its folder name)."""
    return Path(name).name or name


class CrossEncoderReranker:
    """Scores (query, passage) pairs; thread-safe; one loaded model per name per process."""

    def __init__(self, *, max_length: int = 128, batch_size: int = 32, retry_seconds: float = 600.0,
                 device: str = "cpu") -> None:
        self.max_length = max_length
        self.batch_size = batch_size
        self.retry_seconds = retry_seconds
        self.device = device
        self._lock = threading.Lock()
        self._models: dict[str, object] = {}
        self._failures: dict[str, tuple[float, str]] = {}

    def load(self, name: str) -> object:
        """The loaded model, or `RerankUnavailable` (logged once per failure)."""
        name = resolve_model_name(name)
        if not name:
            raise RerankUnavailable("no rerank model configured")
        with self._lock:
            if name in self._models:
                return self._models[name]
            failed = self._failures.get(name)
            if failed and time.monotonic() - failed[0] < self.retry_seconds:
                raise RerankUnavailable(failed[1])
            try:
                model = self._load(name)
            except Exception as exc:  # any loader error means "no reranking", reported once below
                reason = f"cross-encoder {model_label(name)!r} could not be loaded: {type(exc).__name__}: {exc}"
                reason = reason[:300]
                self._failures[name] = (time.monotonic(), reason)
                log.warning("%s; retrieval keeps the fused order (retrying in %.0fs)", reason, self.retry_seconds)
                raise RerankUnavailable(reason) from exc
            self._failures.pop(name, None)
            self._models[name] = model
            log.info("cross-encoder %r loaded", model_label(name))
            return model

    def _load(self, name: str) -> object:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download weights at run time
        from sentence_transformers import CrossEncoder

        return CrossEncoder(name, max_length=self.max_length, device=self.device, local_files_only=True)

    def score(self, name: str, query: str, passages: Sequence[str]) -> np.ndarray:
        """Relevance scores (higher is better), one per passage, in batches of `batch_size`."""
        if not passages:
            return np.zeros(0, dtype=np.float32)
        model = self.load(name)
        scores = model.predict(  # type: ignore[attr-defined]
            [(query, passage) for passage in passages], batch_size=self.batch_size,
            show_progress_bar=False, convert_to_numpy=True,
        )
        return np.asarray(scores, dtype=np.float32).reshape(len(passages), -1)[:, 0]
