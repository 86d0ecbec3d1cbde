"""One row per website for `pilito-pipeline status`: crawl progress, page states, chunks, last error."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from pilito_pipeline.store.page_failures import QUARANTINED


@dataclass(frozen=True)
class SiteStatus:
    partition_key: str
    tenant_id: str
    url: str
    status: str
    progress: dict[str, Any]
    last_crawled_at: datetime | None
    pages: int
    """Pages known (gone ones excluded)."""
    indexed: int
    """Pages whose chunks match their current text."""
    pending: int
    """Pages with new text not yet chunked and embedded."""
    failed: int
    chunks: int
    last_error: str | None
    """The crawl's error, else the latest page failure."""
    retirement_hold: str | None = None
    """Why the last crawl retired nothing (the mass-deletion guard), until the next crawl confirms."""
    quarantined: int = 0
    """Pending pages that failed `retries.PAGE_ATTEMPTS` times: left alone until `retry-pages`."""
    quarantine_reason: str | None = None
    """The latest quarantined page and why it failed."""


def site_statuses(conn: psycopg.Connection, tenant_id: str | None = None, *, embedding_model: str) -> list[SiteStatus]:
    """Quarantined pages count for `embedding_model`, the configured one (a failure is of a model)."""
    rows = conn.execute(
        f"""
        SELECT w.id, w.tenant_id, w.url, w.status, w.progress, w.last_crawled_at, q.quarantined, q.reason,
               w.retirement_hold, coalesce(w.last_error, f.failure) AS last_error,
               count(p.id) FILTER (WHERE p.status <> 'gone') AS pages,
               count(p.id) FILTER (WHERE p.processed_hash IS NOT NULL AND p.processed_hash = p.content_hash) AS indexed,
               count(p.id) FILTER (WHERE p.status IN ('fetched', 'not_modified')
                                     AND p.content_hash IS DISTINCT FROM p.processed_hash) AS pending,
               count(p.id) FILTER (WHERE p.status = 'failed') AS failed,
               (SELECT count(*) FROM tenant_knowledge k
                 WHERE k.tenant_id = w.tenant_id AND k.chunk_type = 'website'
                   AND k.source_id IN (SELECT partition_key FROM pages WHERE website_id = w.id)) AS chunks
        FROM websites w
        LEFT JOIN pages p ON p.website_id = w.id
        LEFT JOIN LATERAL (
            SELECT url || ': ' || failure_reason AS failure FROM pages
            WHERE website_id = w.id AND status = 'failed' AND failure_reason IS NOT NULL
            ORDER BY updated_at DESC LIMIT 1
        ) f ON true
        LEFT JOIN LATERAL (
            SELECT count(*) AS quarantined,
                   (array_agg(pages.url || ': ' || pf.reason ORDER BY pf.failed_at DESC))[1] AS reason
            FROM pages JOIN page_failures pf USING (partition_key)
            WHERE pages.website_id = w.id AND pages.status IN ('fetched', 'not_modified')
              AND pages.partition_registered AND {QUARANTINED}
        ) q ON true
        WHERE %(t)s::text IS NULL OR w.tenant_id = %(t)s
        GROUP BY w.id, f.failure, q.quarantined, q.reason
        ORDER BY w.tenant_id, w.id
        """,
        {"t": tenant_id, "model": embedding_model},
    ).fetchall()
    return [
        SiteStatus(
            partition_key=f"w{r['id']}", tenant_id=r["tenant_id"], url=r["url"], status=r["status"],
            progress=r["progress"] or {}, last_crawled_at=r["last_crawled_at"], pages=r["pages"],
            indexed=r["indexed"], pending=r["pending"], failed=r["failed"], chunks=r["chunks"],
            last_error=r["last_error"], retirement_hold=r["retirement_hold"],
            quarantined=r["quarantined"], quarantine_reason=r["reason"],
        )
        for r in rows
    ]
