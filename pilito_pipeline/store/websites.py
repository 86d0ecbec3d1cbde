"""Websites registered by tenants, and the crawl requests the Dagster sensor turns into runs."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from pilito_pipeline.store.tenants import check_tenant_id


@dataclass(frozen=True)
class Website:
    id: int
    tenant_id: str
    url: str
    max_pages: int = 200
    max_depth: int = 5
    include_patterns: tuple[str, ...] = ()
    exclude_patterns: tuple[str, ...] = ()
    include_subdomains: bool = False
    recrawl_interval: timedelta = timedelta(days=7)
    status: str = "pending"
    progress: dict[str, Any] = field(default_factory=dict)
    last_error: str | None = None
    last_crawled_at: datetime | None = None
    crawl_requested_at: datetime | None = None
    retirement_hold: str | None = None
    """Why the last crawl retired nothing although it found many pages gone (see `store.retirement.close_crawl`)."""

    @property
    def partition_key(self) -> str:
        return website_partition_key(self.id)


def website_partition_key(website_id: int) -> str:
    return f"w{website_id}"


def website_id_from_partition_key(key: str) -> int:
    if not re.fullmatch(r"w\d+", key):
        raise ValueError(f"not a website partition key: {key!r}")
    return int(key[1:])


_COLUMNS = (
    "id, tenant_id, url, max_pages, max_depth, include_patterns, exclude_patterns,"
    " include_subdomains, recrawl_interval, status, progress, last_error, last_crawled_at,"
    " crawl_requested_at, retirement_hold"
)


def _website(row: dict[str, Any]) -> Website:
    return Website(
        **{
            **row,
            "include_patterns": tuple(row["include_patterns"]),
            "exclude_patterns": tuple(row["exclude_patterns"]),
        }
    )


def register_website(
    conn: psycopg.Connection,
    tenant_id: str,
    url: str,
    *,
    max_pages: int = 200,
    max_depth: int = 5,
    include_patterns: tuple[str, ...] = (),
    exclude_patterns: tuple[str, ...] = (),
    include_subdomains: bool = False,
    recrawl_interval: timedelta = timedelta(days=7),
) -> Website:
    """Register (or update the limits of) a tenant's website and request a crawl of it.

    The caller validates the URL (SSRF rules live in `crawl`); this only stores it.
    """
    check_tenant_id(tenant_id)
    row = conn.execute(
        f"""
        INSERT INTO websites (tenant_id, url, max_pages, max_depth, include_patterns,
                              exclude_patterns, include_subdomains, recrawl_interval)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (tenant_id, url) DO UPDATE SET
            max_pages = EXCLUDED.max_pages, max_depth = EXCLUDED.max_depth,
            include_patterns = EXCLUDED.include_patterns,
            exclude_patterns = EXCLUDED.exclude_patterns,
            include_subdomains = EXCLUDED.include_subdomains,
            recrawl_interval = EXCLUDED.recrawl_interval,
            crawl_requested_at = now(), updated_at = now()
        RETURNING {_COLUMNS}
        """,
        (
            tenant_id, url, max_pages, max_depth, list(include_patterns),
            list(exclude_patterns), include_subdomains, recrawl_interval,
        ),
    ).fetchone()
    return _website(row)


def get_website(conn: psycopg.Connection, website_id: int) -> Website:
    row = conn.execute(f"SELECT {_COLUMNS} FROM websites WHERE id = %s", (website_id,)).fetchone()
    if row is None:
        raise LookupError(f"no website with id {website_id}")
    return _website(row)


def list_websites(conn: psycopg.Connection, tenant_id: str | None = None) -> list[Website]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM websites WHERE %(t)s::text IS NULL OR tenant_id = %(t)s ORDER BY id",
        {"t": tenant_id},
    ).fetchall()
    return [_website(r) for r in rows]


def request_due_crawls(conn: psycopg.Connection) -> None:
    """Turn websites whose re-crawl interval has passed into crawl requests."""
    conn.execute(
        """
        UPDATE websites SET crawl_requested_at = now()
        WHERE status IN ('ready', 'failed')
          AND last_crawled_at IS NOT NULL
          AND last_crawled_at + recrawl_interval <= now()
          AND crawl_requested_at <= last_crawled_at
        """
    )


def websites_awaiting_crawl(conn: psycopg.Connection) -> list[Website]:
    """Websites with a crawl request newer than their last crawl, not crawling right now."""
    rows = conn.execute(
        f"""
        SELECT {_COLUMNS} FROM websites
        WHERE status <> 'disabled'
          AND (last_crawled_at IS NULL OR crawl_requested_at > last_crawled_at)
        ORDER BY crawl_requested_at, id
        """
    ).fetchall()
    return [_website(r) for r in rows]


def mark_crawl_started(conn: psycopg.Connection, website_id: int) -> datetime:
    row = conn.execute(
        "UPDATE websites SET status = 'crawling', last_error = NULL, updated_at = now()"
        " WHERE id = %s RETURNING now() AS started_at",
        (website_id,),
    ).fetchone()
    return row["started_at"]


def record_crawl_progress(conn: psycopg.Connection, website_id: int, progress: dict[str, Any]) -> None:
    conn.execute(
        "UPDATE websites SET progress = %s, updated_at = now() WHERE id = %s",
        (Jsonb(progress), website_id),
    )


def mark_crawl_finished(
    conn: psycopg.Connection,
    website_id: int,
    started_at: datetime,
    progress: dict[str, Any],
    error: str | None = None,
) -> None:
    """Close a crawl: `last_crawled_at` is the start time, so requests made meanwhile stay pending."""
    conn.execute(
        """
        UPDATE websites SET status = %s, progress = %s, last_error = %s,
               last_crawled_at = %s, updated_at = now()
        WHERE id = %s
        """,
        ("failed" if error else "ready", Jsonb(progress), error, started_at, website_id),
    )


def partitions_to_drop(conn: psycopg.Connection, website_id: int) -> list[str]:
    """Partition keys of removed pages whose `pages` partition an earlier crawl had to keep (a
    page registered again since is left out: its partition is live)."""
    rows = conn.execute(
        "SELECT p.partition_key FROM websites w JOIN pages p ON p.partition_key = ANY(w.partitions_to_drop)"
        " WHERE w.id = %s AND NOT p.partition_registered",
        (website_id,),
    ).fetchall()
    return [r["partition_key"] for r in rows]


def keep_partitions_to_drop(conn: psycopg.Connection, website_id: int, keys: list[str]) -> None:
    """Remember the removed pages' partitions still to delete (replacing the earlier list)."""
    conn.execute("UPDATE websites SET partitions_to_drop = %s WHERE id = %s", (sorted(keys), website_id))


def request_crawl_again(conn: psycopg.Connection, website_id: int, consumed_at: datetime, reason: str) -> bool:
    """Renew a crawl request that a run consumed (created at `consumed_at`) but never closed: the
    run died, or failed before the crawl began. A new request time gives a new run key; a crawl left
    `crawling` becomes `failed` with the reason. False when a newer request exists or the website is
    disabled."""
    row = conn.execute(
        """
        UPDATE websites SET crawl_requested_at = now(), updated_at = now(),
               status = CASE WHEN status = 'crawling' THEN 'failed' ELSE status END,
               last_error = CASE WHEN status = 'crawling' THEN %s ELSE last_error END
        WHERE id = %s AND status <> 'disabled' AND crawl_requested_at <= %s
        RETURNING id
        """,
        (reason, website_id, consumed_at),
    ).fetchone()
    return row is not None
