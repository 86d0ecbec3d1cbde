"""Health counts of the knowledge table, for the asset checks: each should be 0."""

from __future__ import annotations

import psycopg
from psycopg.rows import tuple_row


def _count(conn: psycopg.Connection, sql: str, params: tuple[object, ...] = ()) -> int:
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(sql, params).fetchone()
    return int(row[0]) if row else 0


def count_duplicate_chunks(conn: psycopg.Connection) -> int:
    """Chunk positions held by more than one row (the unique constraint keeps this at 0)."""
    return _count(
        conn,
        "SELECT coalesce(sum(n - 1), 0) FROM ("
        " SELECT count(*) AS n FROM tenant_knowledge"
        " GROUP BY tenant_id, chunk_type, source_id, chunk_index HAVING count(*) > 1) d",
    )


def count_orphan_chunks(conn: psycopg.Connection) -> int:
    """Website chunks whose page is missing, belongs to another tenant, or is gone."""
    return _count(
        conn,
        "SELECT count(*) FROM tenant_knowledge k WHERE k.chunk_type = 'website' AND NOT EXISTS ("
        " SELECT 1 FROM pages p WHERE p.partition_key = k.source_id AND p.tenant_id = k.tenant_id"
        " AND p.status <> 'gone')",
    )


def count_embedding_mismatches(conn: psycopg.Connection, model_name: str, dimension: int) -> int:
    """Searchable (non-parent) chunks not embedded by `model_name` at `dimension`, or missing one."""
    return _count(
        conn,
        "SELECT count(*) FROM tenant_knowledge WHERE NOT is_parent AND ("
        " embedding_model IS DISTINCT FROM %s"
        " OR full_embedding IS NULL OR vector_dims(full_embedding) <> %s"
        " OR (tldr <> '' AND (tldr_embedding IS NULL OR vector_dims(tldr_embedding) <> %s)))",
        (model_name, dimension, dimension),
    )


def count_completed_pages_without_chunks(conn: psycopg.Connection) -> int:
    """Pages marked processed for their current text that have no chunk at all."""
    return _count(
        conn,
        "SELECT count(*) FROM pages p"
        " WHERE p.status IN ('fetched', 'not_modified') AND p.processed_hash IS NOT NULL"
        " AND p.processed_hash = p.content_hash AND NOT EXISTS ("
        " SELECT 1 FROM tenant_knowledge k WHERE k.tenant_id = p.tenant_id"
        " AND k.chunk_type = 'website' AND k.source_id = p.partition_key)",
    )
