"""Chunks of one source → knowledge rows; and direct ingestion of a tenant's manual and FAQ text.

Website pages reach the knowledge table through Dagster (defs/); manual and FAQ text is small and
typed in by a person, so it goes through the same chunk → embed → upsert path in one call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

from pilito_pipeline.embed import EmbeddingProvider, embed_rows
from pilito_pipeline.settings import get_settings
from pilito_pipeline.store.knowledge import (
    KnowledgeRow, SourceKey, UpsertStats, load_sources, lock_sources, upsert_sources,
)
from pilito_pipeline.store.tenants import check_tenant_id
from pilito_pipeline.text import Chunk, chunk_faq, chunk_manual_text, tokenize


def chunk_hash(chunk: Chunk) -> str:
    """Identity of what a chunk says: equal hashes mean its embeddings can be reused."""
    payload = "\x1f".join((chunk.section_title, chunk.text, chunk.tldr))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def knowledge_rows(
    tenant_id: str,
    chunk_type: str,
    source_id: str,
    document_id: str,
    chunks: Sequence[Chunk],
    extra_metadata: dict | None = None,
) -> list[KnowledgeRow]:
    """Rows for every chunk of one source (embeddings still empty)."""
    return [
        KnowledgeRow(
            tenant_id=tenant_id,
            chunk_type=chunk_type,
            source_id=source_id,
            document_id=document_id,
            chunk_index=chunk.chunk_index,
            total_chunks=len(chunks),
            is_parent=chunk.is_parent,
            parent_chunk_index=chunk.parent_chunk_index,
            section_title=chunk.section_title,
            full_text=chunk.text,
            tldr=chunk.tldr,
            word_count=chunk.word_count,
            search_terms=[] if chunk.is_parent else tokenize(f"{chunk.section_title} {chunk.text}"),
            content_hash=chunk_hash(chunk),
            metadata={**(extra_metadata or {}), **chunk.metadata},
            embedding_model=None,
            full_embedding=None,
            tldr_embedding=None,
        )
        for chunk in chunks
    ]


def manual_source_id(title: str) -> str:
    return "manual:" + hashlib.sha256(title.strip().encode("utf-8")).hexdigest()[:16]


def faq_source_id(question: str) -> str:
    return "faq:" + hashlib.sha256(question.strip().encode("utf-8")).hexdigest()[:16]


def ingest_manual(
    conn: psycopg.Connection, provider: EmbeddingProvider, tenant_id: str, title: str, text: str
) -> UpsertStats:
    """Store (or replace) a tenant's manual text under its title."""
    check_tenant_id(tenant_id)
    if not text.strip():
        raise ValueError("manual text is empty")
    rows = knowledge_rows(tenant_id, "manual", manual_source_id(title), title, chunk_manual_text(title, text))
    return _embed_and_store(conn, provider, rows)


def ingest_faq(
    conn: psycopg.Connection, provider: EmbeddingProvider, tenant_id: str, question: str, answer: str
) -> UpsertStats:
    """Store (or replace) one FAQ entry, keyed by its question."""
    check_tenant_id(tenant_id)
    if not question.strip() or not answer.strip():
        raise ValueError("an FAQ entry needs both a question and an answer")
    rows = knowledge_rows(tenant_id, "faq", faq_source_id(question), question, chunk_faq(question, answer))
    return _embed_and_store(conn, provider, rows)


def _embed_and_store(
    conn: psycopg.Connection, provider: EmbeddingProvider, rows: list[KnowledgeRow]
) -> UpsertStats:
    embed_rows(rows, provider, reuse_from=conn, tldr=get_settings().embed_tldr)
    key = (rows[0].tenant_id, rows[0].chunk_type, rows[0].source_id)
    with conn.transaction():
        return upsert_sources(conn, {key: rows})


ENTRY_TYPES = ("manual", "faq")


def stale_entries(conn: psycopg.Connection, embedding_model: str, limit: int = 200) -> list[SourceKey]:
    """Manual and FAQ entries holding chunks not embedded by `embedding_model` (after a model change)."""
    rows = conn.execute(
        """
        SELECT DISTINCT tenant_id, chunk_type, source_id FROM tenant_knowledge
        WHERE chunk_type = ANY(%s) AND NOT is_parent AND embedding_model IS DISTINCT FROM %s
        ORDER BY tenant_id, chunk_type, source_id LIMIT %s
        """,
        (list(ENTRY_TYPES), embedding_model, limit),
    ).fetchall()
    return [(r["tenant_id"], r["chunk_type"], r["source_id"]) for r in rows]


def _entry_version(rows: Sequence[KnowledgeRow]) -> list[tuple[int, str]]:
    """What an entry says, chunk by chunk (embeddings aside)."""
    return [(row.chunk_index, row.content_hash) for row in rows]


@dataclass(frozen=True)
class Reembedded:
    chunks: int
    """Chunks written."""
    entries: list[SourceKey]
    """Entries re-embedded (or found already embedded as they are)."""
    changed: list[SourceKey]
    """Entries edited while they were being embedded: left as the edit wrote them."""


def reembed_entries(conn: psycopg.Connection, provider: EmbeddingProvider, keys: Sequence[SourceKey]) -> Reembedded:
    """Re-embed the stored chunks of these manual/FAQ entries with `provider`. Website pages are
    re-embedded by their page runs; these have no crawl to redo.

    Each entry is written back only if it still says what was read (compare-and-set under its source
    lock, in the write's transaction): an entry edited meanwhile (`add-faq`, `add-manual`) keeps the
    edit, which its writer embedded itself. Use an autocommit connection: the embedding pass then
    holds no transaction open.
    """
    written, done, changed = 0, [], []
    for key, rows in load_sources(conn, keys).items():
        if not rows or key[1] not in ENTRY_TYPES:
            continue
        read = _entry_version(rows)
        embed_rows(rows, provider, reuse_from=conn, tldr=get_settings().embed_tldr)
        with conn.transaction():
            lock_sources(conn, [key])
            if _entry_version(load_sources(conn, [key])[key]) != read:
                changed.append(key)
                continue
            stats = upsert_sources(conn, {key: rows})
        written += stats.inserted + stats.updated
        done.append(key)
    return Reembedded(written, done, changed)
