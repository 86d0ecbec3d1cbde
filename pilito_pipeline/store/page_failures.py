"""Pages that failed alone: retried with backoff, then quarantined until an operator releases them.

A page run isolates its pages: one whose chunking raises or whose texts the embedding provider
refuses is recorded here with its reason, and the run stores the
others. A failure counts for the text (`content_hash`) and embedding model the page failed with;
new text or another model makes the page worth a fresh try at once. After attempt n the page waits
`first_delay * 2**(n-1)` seconds; the `max_attempts`-th failure quarantines it: the pages sensor
leaves it alone (so it never holds back its tenant's other pages) until `release_pages`
(`pilito-pipeline retry-pages`). A page stored successfully loses its record in the writer's
transaction (`clear_page_failures`). The numbers are the callers' (pilito_pipeline/retries.py).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime

import psycopg

WAITING_OR_QUARANTINED = """EXISTS (
    SELECT FROM page_failures f WHERE f.partition_key = pages.partition_key
       AND f.content_hash = pages.content_hash AND f.embedding_model = %(model)s
       AND (f.quarantined_at IS NOT NULL OR f.retry_at > now()))"""
"""SQL over `pages` (with the `model` parameter): the page's last failure, for its current text and
model, says to leave it alone for now."""

QUARANTINED = """EXISTS (
    SELECT FROM page_failures f WHERE f.partition_key = pages.partition_key
       AND f.content_hash = pages.content_hash AND f.embedding_model = %(model)s
       AND f.quarantined_at IS NOT NULL)"""


@dataclass(frozen=True)
class PageFailure:
    """One page's failure in a run: the text it failed with and why."""

    tenant_id: str
    content_hash: str
    reason: str


@dataclass(frozen=True)
class RecordedFailure:
    partition_key: str
    attempts: int
    retry_at: datetime | None
    """None once quarantined."""

    @property
    def quarantined(self) -> bool:
        return self.retry_at is None


def record_page_failures(
    conn: psycopg.Connection,
    failures: Mapping[str, PageFailure],
    embedding_model: str,
    *,
    max_attempts: int,
    first_delay_seconds: float,
) -> list[RecordedFailure]:
    """Count one more failed attempt for each page (by partition key) and set when it may be tried
    again, or quarantine it at its `max_attempts`-th failure. A failure of another text or model
    starts again at attempt 1. The caller commits."""
    if not failures:
        return []
    rows = conn.execute(
        """
        WITH incoming AS (
            SELECT * FROM unnest(%(keys)s::text[], %(tenants)s::text[], %(hashes)s::text[], %(reasons)s::text[])
                AS v(partition_key, tenant_id, content_hash, reason)
        ), counted AS (
            SELECT i.*, CASE WHEN f.content_hash = i.content_hash AND f.embedding_model = %(model)s
                             THEN f.attempts + 1 ELSE 1 END AS attempts
            FROM incoming i LEFT JOIN page_failures f USING (partition_key)
        )
        INSERT INTO page_failures AS f (partition_key, tenant_id, content_hash, embedding_model, attempts,
                                        reason, failed_at, retry_at, quarantined_at)
        SELECT partition_key, tenant_id, content_hash, %(model)s, attempts, reason, now(),
               CASE WHEN attempts < %(max)s
                    THEN now() + make_interval(secs => %(delay)s * 2 ^ (attempts - 1)) END,
               CASE WHEN attempts >= %(max)s THEN now() END
        FROM counted ORDER BY partition_key
        ON CONFLICT (partition_key) DO UPDATE SET
            tenant_id = EXCLUDED.tenant_id, content_hash = EXCLUDED.content_hash,
            embedding_model = EXCLUDED.embedding_model, attempts = EXCLUDED.attempts,
            reason = EXCLUDED.reason, failed_at = EXCLUDED.failed_at, retry_at = EXCLUDED.retry_at,
            quarantined_at = EXCLUDED.quarantined_at
        RETURNING partition_key, attempts, retry_at
        """,
        {
            "keys": list(failures), "tenants": [f.tenant_id for f in failures.values()],
            "hashes": [f.content_hash for f in failures.values()],
            "reasons": [f.reason for f in failures.values()],
            "model": embedding_model, "max": max_attempts, "delay": first_delay_seconds,
        },
    ).fetchall()
    return sorted((RecordedFailure(**r) for r in rows), key=lambda r: r.partition_key)


def clear_page_failures(conn: psycopg.Connection, partition_keys: Collection[str]) -> None:
    """Forget the failures of pages just stored (in the writer's transaction)."""
    conn.execute("DELETE FROM page_failures WHERE partition_key = ANY(%s)", (list(partition_keys),))


@dataclass(frozen=True)
class QuarantinedPage:
    partition_key: str
    tenant_id: str
    url: str
    attempts: int
    reason: str
    failed_at: datetime


def quarantined_pages(
    conn: psycopg.Connection, embedding_model: str, *, tenant_id: str | None = None,
    partition_keys: Collection[str] | None = None,
) -> list[QuarantinedPage]:
    """Pages waiting for an operator: quarantined for their current text and model, still live
    (of one tenant, or among `partition_keys`, when given)."""
    rows = conn.execute(
        f"""
        SELECT pages.partition_key, pages.tenant_id, pages.url, f.attempts, f.reason, f.failed_at
        FROM pages JOIN page_failures f USING (partition_key)
        WHERE (%(tenant)s::text IS NULL OR pages.tenant_id = %(tenant)s)
          AND (%(keys)s::text[] IS NULL OR pages.partition_key = ANY(%(keys)s))
          AND pages.status IN ('fetched', 'not_modified') AND pages.partition_registered AND {QUARANTINED}
        ORDER BY pages.tenant_id, pages.partition_seq
        """,
        {"tenant": tenant_id, "model": embedding_model,
         "keys": None if partition_keys is None else list(partition_keys)},
    ).fetchall()
    return [QuarantinedPage(**r) for r in rows]


def quarantine_counts(
    conn: psycopg.Connection, embedding_model: str, tenant_ids: Collection[str] | None = None
) -> dict[str, int]:
    """Quarantined live pages by tenant, of `tenant_ids` (every tenant when None)."""
    rows = conn.execute(
        f"""
        SELECT pages.tenant_id, count(*) AS n FROM pages JOIN page_failures f USING (partition_key)
        WHERE (%(tenants)s::text[] IS NULL OR pages.tenant_id = ANY(%(tenants)s))
          AND pages.status IN ('fetched', 'not_modified') AND pages.partition_registered AND {QUARANTINED}
        GROUP BY pages.tenant_id
        """,
        {"tenants": None if tenant_ids is None else list(tenant_ids), "model": embedding_model},
    ).fetchall()
    return {r["tenant_id"]: r["n"] for r in rows}


def release_pages(conn: psycopg.Connection, tenant_id: str) -> list[str]:
    """Forget every failure of the tenant's pages (quarantined or waiting): the pages sensor gives
    them a page run at once, with a fresh count of attempts. Returns their keys; the caller commits."""
    rows = conn.execute(
        "DELETE FROM page_failures WHERE tenant_id = %s RETURNING partition_key", (tenant_id,)
    ).fetchall()
    return sorted(r["partition_key"] for r in rows)
