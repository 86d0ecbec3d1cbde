"""Reading candidate chunks and their parents back from tenant_knowledge (always tenant-filtered)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import psycopg
from psycopg.rows import dict_row

from pilito_pipeline.retrieval.packing import ParentKey, RetrievedChunk

_COLUMNS = ("id, chunk_type, source_id, document_id, chunk_index, parent_chunk_index, section_title,"
            " full_text, tldr, metadata->>'url' AS url")


def _chunk(row: dict) -> RetrievedChunk:
    return RetrievedChunk(
        chunk_id=row["id"], chunk_type=row["chunk_type"], source_id=row["source_id"],
        document_id=row["document_id"], chunk_index=row["chunk_index"],
        parent_chunk_index=row["parent_chunk_index"], section_title=row["section_title"] or "",
        text=row["full_text"], tldr=row["tldr"] or "",
        url=row["url"] or (row["document_id"] if row["chunk_type"] == "website" else None),
    )


def fetch_chunks(conn: psycopg.Connection, tenant_id: str, chunk_ids: Iterable[int]) -> dict[int, RetrievedChunk]:
    """The tenant's searchable chunks among `chunk_ids`, by id (ids of other tenants are not returned)."""
    ids = sorted(set(chunk_ids))
    if not ids:
        return {}
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM tenant_knowledge"
                    " WHERE tenant_id = %s AND id = ANY(%s) AND NOT is_parent", (tenant_id, ids))
        return {row["id"]: _chunk(row) for row in cur.fetchall()}


def fetch_parents(conn: psycopg.Connection, tenant_id: str, keys: Sequence[ParentKey]) -> dict[ParentKey, RetrievedChunk]:
    """The tenant's parent chunks for (chunk_type, source_id, chunk_index) keys."""
    keys = sorted(set(keys))
    if not keys:
        return {}
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"SELECT {_COLUMNS} FROM tenant_knowledge"
            " JOIN unnest(%s::text[], %s::text[], %s::int[]) AS k(chunk_type, source_id, chunk_index)"
            " USING (chunk_type, source_id, chunk_index)"
            " WHERE tenant_id = %s AND is_parent",
            ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys], tenant_id),
        )
        found = [_chunk(row) for row in cur.fetchall()]
    return {(c.chunk_type, c.source_id, c.chunk_index): c for c in found}


def chunk_language(conn: psycopg.Connection, tenant_id: str, chunk_id: int) -> str | None:
    """The language extraction recorded for one of the tenant's chunks (metadata "language"), if any."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT metadata->>'language' AS language FROM tenant_knowledge"
                          " WHERE tenant_id = %s AND id = %s", (tenant_id, chunk_id)).fetchone()
    return row["language"] if row else None
