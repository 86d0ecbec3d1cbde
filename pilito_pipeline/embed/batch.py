"""Embedding the rows of a whole run at once, reusing what the store already has."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import psycopg

from pilito_pipeline.embed.errors import EmbeddingRequestError, ProviderMisconfigured
from pilito_pipeline.embed.provider import EmbeddingProvider
from pilito_pipeline.sparse_vector import SparseVector
from pilito_pipeline.store.knowledge import KnowledgeRow, embedding_text, reusable_embeddings, text_digest


@dataclass(frozen=True)
class EmbedCounts:
    embedded: int
    """Distinct texts sent to the provider."""
    reused: int
    """Embeddings filled in from stored rows, without the provider."""


def embed_rows(
    rows: Sequence[KnowledgeRow], provider: EmbeddingProvider, *, reuse_from: psycopg.Connection | None = None,
    tldr: bool = True,
) -> EmbedCounts:
    """Give every non-parent row its full-text embedding (of `embedding_text`: heading path and
    text) from `provider`, its TL;DR embedding when `tldr` (settings.embed_tldr; without it the
    TL;DR column stays empty), and the full text's latent terms when the provider has a sparse
    head (`embed_with_latent_terms`: e5; both from one pass).

    All missing texts of all rows go to the provider in one call (it batches). A text the same
    model already embedded for the same source, as stored in the database (`reuse_from`), is
    reused, so re-running unchanged chunks makes no provider call; changing the model re-embeds
    everything, and a stored row without latent terms gets them (its stored vector is kept).
    Embeddings the rows already carry are replaced, never trusted. Rows are only modified once
    every embedding is in hand. Parent rows and empty TL;DRs get no embedding.
    """
    children = [row for row in rows if not row.is_parent]
    known: dict[str, np.ndarray] = {}
    known_latent: dict[str, SparseVector] = {}
    if reuse_from is not None and children:
        known, known_latent = reusable_embeddings(reuse_from, {row.source_key for row in children},
                                                  provider.model_name)
    full_texts = [embedding_text(row) for row in children]
    tldrs = [row.tldr for row in children if tldr and row.tldr.strip()]
    reused_before = sum(1 for text in full_texts + tldrs if text_digest(text) in known)
    sparse_head = hasattr(provider, "embed_with_latent_terms")
    both = list(dict.fromkeys(t for t in full_texts if text_digest(t) not in known
                              or sparse_head and text_digest(t) not in known_latent)) if sparse_head else []
    in_both = set(both)
    missing = list(dict.fromkeys(t for t in (tldrs if sparse_head else full_texts + tldrs)
                                 if text_digest(t) not in known and t not in in_both))
    if both:
        vectors, latents = provider.embed_with_latent_terms(both)
        _check_shape(provider, vectors, len(both))
        if len(latents) != len(both):
            raise ProviderMisconfigured(f"{provider.model_name} returned {len(latents)} latent-term vectors"
                                        f" for {len(both)} texts")
        # a stored vector stays as it is (a new batch could round it differently and rewrite the row)
        known = {**{text_digest(t): v for t, v in zip(both, vectors, strict=True)}, **known}
        known_latent = known_latent | {text_digest(t): terms for t, terms in zip(both, latents, strict=True)}
    if missing:
        vectors = provider.embed(missing)
        _check_shape(provider, vectors, len(missing))
        known = known | {text_digest(text): vector for text, vector in zip(missing, vectors, strict=True)}
    for row in rows:
        if row.is_parent:
            row.embedding_model, row.full_embedding, row.tldr_embedding, row.latent_terms = None, None, None, None
            continue
        row.embedding_model = provider.model_name
        row.full_embedding = known[text_digest(embedding_text(row))]
        row.tldr_embedding = known[text_digest(row.tldr)] if tldr and row.tldr.strip() else None
        row.latent_terms = known_latent[text_digest(embedding_text(row))] if sparse_head else None
    return EmbedCounts(embedded=len(both) + len(missing), reused=reused_before)


def _check_shape(provider: EmbeddingProvider, vectors: np.ndarray, texts: int) -> None:
    if vectors.shape != (texts, provider.dimension):
        raise ProviderMisconfigured(
            f"{provider.model_name} returned shape {vectors.shape} for {texts} texts of dimension {provider.dimension}"
        )


Key = TypeVar("Key", bound=Hashable)


def embed_groups(
    groups: Mapping[Key, Sequence[KnowledgeRow]], provider: EmbeddingProvider, *,
    reuse_from: psycopg.Connection | None = None, tldr: bool = True,
) -> tuple[EmbedCounts, dict[Key, str]]:
    """`embed_rows` over every group's rows (a group: one page's rows) in one pass, isolating the
    groups whose texts the provider refuses: when a request is refused, the groups are halved and each
    half tried again, so a refusal costs the refused group alone about 2·log2(groups) more passes.
    Returns the counts of the groups embedded and, by group, why the others were refused.

    A provider that refuses everything (`ProviderMisconfigured`) or is unavailable raises: no group
    is to blame.
    """
    refused: dict[Key, str] = {}
    embedded = reused = 0
    pending = [list(groups)]
    while pending:
        keys = pending.pop()
        try:
            counts = embed_rows([row for key in keys for row in groups[key]], provider,
                                reuse_from=reuse_from, tldr=tldr)
        except ProviderMisconfigured:
            raise
        except EmbeddingRequestError as exc:
            if len(keys) == 1:
                refused[keys[0]] = f"embedding request refused: {exc}"
            else:
                pending += [keys[len(keys) // 2:], keys[: len(keys) // 2]]
            continue
        embedded, reused = embedded + counts.embedded, reused + counts.reused
    return EmbedCounts(embedded=embedded, reused=reused), refused
