"""Health counts of the knowledge base, by tenant: each should be empty.

Every count takes `pages`: the page partition keys of one page run (what its asset checks look at:
index lookups on those pages and their tenant's rows, so the cost follows the run, not the table),
or None for the whole table (the scheduled audit).
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg.rows import tuple_row

from pilito_pipeline.store.page_failures import quarantine_counts
from pilito_pipeline.store.pages import page_tenants

# The scope's pages and chunks: the run's pages and their website chunks, found under their tenants
# (identity index); or every page and every chunk.
_RUN_PAGES = "SELECT partition_key, tenant_id FROM pages WHERE partition_key = ANY(%(pages)s)"
_ALL_PAGES = "SELECT partition_key, tenant_id FROM pages"
_RUN_CHUNKS = """
SELECT k.* FROM tenant_knowledge k
 WHERE k.tenant_id = ANY(ARRAY(SELECT DISTINCT tenant_id FROM pages WHERE partition_key = ANY(%(pages)s)))
   AND k.chunk_type = 'website' AND k.source_id = ANY(%(pages)s)
"""
_ALL_CHUNKS = "SELECT k.* FROM tenant_knowledge k"


def _by_tenant(conn: psycopg.Connection, sql: str, pages: Sequence[str] | None,
               params: dict[str, object] | None = None) -> dict[str, int]:
    scoped = sql.replace("{pages}", _ALL_PAGES if pages is None else _RUN_PAGES)
    scoped = scoped.replace("{chunks}", _ALL_CHUNKS if pages is None else _RUN_CHUNKS)
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(scoped, {**(params or {}), "pages": list(pages or [])}).fetchall()
    return {tenant: int(count) for tenant, count in rows if count}


def incomplete_chunk_sets(conn: psycopg.Connection, pages: Sequence[str] | None) -> dict[str, int]:
    """Pages whose stored chunks are not exactly positions 0..n-1, each once, all saying n chunks.

    The unique constraint cannot be broken, so this checks what it does not cover: a page that lost
    a chunk, kept one from an older, longer version, or mixes two versions' totals.
    """
    return _by_tenant(
        conn,
        """
        SELECT tenant_id, count(*) FROM (
            SELECT k.tenant_id FROM ({chunks}) k
             GROUP BY k.tenant_id, k.source_id
            HAVING count(*) <> max(k.total_chunks) OR min(k.total_chunks) <> max(k.total_chunks)
                OR min(k.chunk_index) <> 0 OR max(k.chunk_index) <> count(*) - 1) bad
         GROUP BY tenant_id
        """,
        pages,
    )


def chunks_without_live_page(conn: psycopg.Connection, pages: Sequence[str] | None) -> dict[str, int]:
    """Website chunks whose page is missing, another tenant's, or holds no document (gone, skipped)."""
    return _by_tenant(
        conn,
        """
        SELECT k.tenant_id, count(*) FROM ({chunks}) k
         WHERE k.chunk_type = 'website' AND NOT EXISTS (SELECT 1 FROM pages p WHERE p.partition_key = k.source_id
                              AND p.tenant_id = k.tenant_id AND p.document IS NOT NULL)
         GROUP BY k.tenant_id
        """,
        pages,
    )


def embedding_mismatches(
    conn: psycopg.Connection, pages: Sequence[str] | None, model_name: str, dimension: int, *, tldr: bool = True
) -> dict[str, int]:
    """Searchable (non-parent) chunks not embedded by `model_name` at `dimension`, or missing their
    full-text embedding, or (when TL;DRs are embedded: `tldr`) their TL;DR embedding."""
    return _by_tenant(
        conn,
        """
        SELECT k.tenant_id, count(*) FROM ({chunks}) k
         WHERE NOT k.is_parent AND (
               k.embedding_model IS DISTINCT FROM %(model)s
            OR k.full_embedding IS NULL OR vector_dims(k.full_embedding) <> %(dimension)s
            OR (%(tldr)s AND k.tldr <> '' AND k.tldr_embedding IS NULL)
            OR vector_dims(k.tldr_embedding) <> %(dimension)s)
         GROUP BY k.tenant_id
        """,
        pages,
        {"model": model_name, "dimension": dimension, "tldr": tldr},
    )


def processed_pages_without_chunks(conn: psycopg.Connection, pages: Sequence[str] | None) -> dict[str, int]:
    """Pages marked processed for their current text that have no chunk at all."""
    return _by_tenant(
        conn,
        """
        SELECT p.tenant_id, count(*) FROM pages p JOIN ({pages}) s USING (partition_key)
         WHERE p.status IN ('fetched', 'not_modified') AND p.processed_hash IS NOT NULL
           AND p.processed_hash = p.content_hash AND NOT EXISTS (
               SELECT 1 FROM tenant_knowledge k WHERE k.tenant_id = p.tenant_id
                  AND k.chunk_type = 'website' AND k.source_id = p.partition_key)
         GROUP BY p.tenant_id
        """,
        pages,
    )


def quarantined_pages(conn: psycopg.Connection, pages: Sequence[str] | None, embedding_model: str) -> dict[str, int]:
    """Quarantined pages of the tenants of `pages`, all of each tenant's (a quarantined page is in no
    page run, so a run reports its tenant's), or of every tenant."""
    tenants = None if pages is None else set(page_tenants(conn, list(pages)).values())
    return quarantine_counts(conn, embedding_model, tenants)
