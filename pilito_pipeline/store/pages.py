"""Pages of crawled websites: what was fetched, its extracted document, and what still needs chunks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from pilito_pipeline.store.page_failures import QUARANTINED, WAITING_OR_QUARANTINED


@dataclass(frozen=True)
class StoredValidators:
    etag: str | None
    last_modified: str | None
    links: tuple[str, ...]


@dataclass(frozen=True)
class PageRecord:
    """One crawl outcome for a URL, ready to be written."""

    url: str
    depth: int
    status: str  # fetched | not_modified | skipped | failed | gone
    http_status: int | None = None
    failure_reason: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    links: tuple[str, ...] = ()
    title: str | None = None
    language: str | None = None
    document: dict[str, Any] | None = None
    content_hash: str | None = None


@dataclass(frozen=True)
class PendingPage:
    """A page whose extracted text changed since its chunks were written."""

    partition_key: str
    tenant_id: str
    website_id: int
    url: str
    content_hash: str
    document: dict[str, Any]


def stored_validators(conn: psycopg.Connection, website_id: int, url: str) -> StoredValidators | None:
    """What the last crawls stored about `url`: its last known links, and the validators of its
    last successful fetch (only while that fetch's document is stored, so a 304 has one to keep)."""
    row = conn.execute(
        "SELECT etag, last_modified, links,"
        " status IN ('fetched', 'not_modified') AND document IS NOT NULL AS conditional"
        " FROM pages WHERE website_id = %s AND url = %s",
        (website_id, url),
    ).fetchone()
    if row is None:
        return None
    if not row["conditional"]:
        return StoredValidators(None, None, tuple(row["links"]))
    return StoredValidators(row["etag"], row["last_modified"], tuple(row["links"]))


def stored_text_owners(conn: psycopg.Connection, website_id: int) -> dict[str, str]:
    """Content hash → URL of the page that currently holds that text, for duplicate detection."""
    rows = conn.execute(
        "SELECT DISTINCT ON (content_hash) content_hash, url FROM pages"
        " WHERE website_id = %s AND content_hash IS NOT NULL AND status IN ('fetched', 'not_modified')"
        " ORDER BY content_hash, id",
        (website_id,),
    ).fetchall()
    return {r["content_hash"]: r["url"] for r in rows}


_RECORD_PAGE = """
        INSERT INTO pages AS p (tenant_id, website_id, url, status, failure_reason, http_status,
                               depth, etag, last_modified, links, title, language, document,
                               content_hash, fetched_at, last_seen_at)
        VALUES (%(tenant)s, %(website)s, %(url)s, %(status)s, %(reason)s, %(http)s, %(depth)s,
                %(etag)s, %(lm)s, %(links)s, %(title)s, %(language)s, %(document)s, %(hash)s,
                now(), now())
        ON CONFLICT (website_id, url) DO UPDATE SET
            status = CASE WHEN EXCLUDED.status = 'gone' AND p.document IS NOT NULL THEN 'failed'
                          ELSE EXCLUDED.status END,
            failure_reason = EXCLUDED.failure_reason,
            http_status = EXCLUDED.http_status,
            depth = LEAST(p.depth, EXCLUDED.depth),
            etag = CASE WHEN %(keep)s THEN p.etag ELSE EXCLUDED.etag END,
            last_modified = CASE WHEN %(keep)s THEN p.last_modified ELSE EXCLUDED.last_modified END,
            links = CASE WHEN EXCLUDED.status = 'gone' THEN p.links ELSE EXCLUDED.links END,
            title = COALESCE(CASE WHEN %(keep)s THEN p.title ELSE EXCLUDED.title END, p.title),
            language = COALESCE(CASE WHEN %(keep)s THEN p.language ELSE EXCLUDED.language END, p.language),
            document = CASE WHEN %(keep)s THEN p.document ELSE EXCLUDED.document END,
            content_hash = CASE WHEN %(keep)s THEN p.content_hash ELSE EXCLUDED.content_hash END,
            fetched_at = now(), last_seen_at = now(), updated_at = now(),
            unseen_crawls = 0, unseen_since = NULL
        RETURNING partition_key, partition_registered, document IS NOT NULL AS has_document
        """


def record_page(
    conn: psycopg.Connection, tenant_id: str, website_id: int, page: PageRecord
) -> tuple[str, bool]:
    """Upsert one crawl outcome; return (partition key, whether its partition must be registered).

    A 304 keeps the stored document and hash. A failed fetch (state unknown) keeps the last good
    document, and so does a 404/410 until the crawl's end decides to retire it
    (`store.retirement.close_crawl`): until then it is `failed` with its HTTP status, so `gone` is
    only ever written together with the deletion of the page's chunks, and a crawl that dies
    mid-way leaves no `gone` page holding chunks. A URL that answers 404/410 without ever having
    had a document is `gone` at once (nothing to delete). A skipped page (noindex, duplicate, not
    HTML, unextractable) drops its document: its chunks go at the crawl's end. The links stored are
    the ones the crawler says the page has; a 404/410 keeps its last links, in case the
    mass-deletion guard keeps the page. Any outcome means the crawl reached the page: its count of
    crawls that did not (`unseen_crawls`) starts again.
    """
    keeps_document = page.status in ("not_modified", "failed", "gone")
    row = conn.execute(
        _RECORD_PAGE,
        {
            "tenant": tenant_id, "website": website_id, "url": page.url, "status": page.status,
            "reason": page.failure_reason, "http": page.http_status, "depth": page.depth,
            "etag": page.etag, "lm": page.last_modified, "links": list(page.links),
            "title": page.title, "language": page.language,
            "document": Jsonb(page.document) if page.document is not None else None,
            "hash": page.content_hash, "keep": keeps_document,
        },
    ).fetchone()
    return row["partition_key"], row["has_document"] and not row["partition_registered"]


PARTITION_REGISTRATION_LOCK = 0x70616765  # "page"
"""Advisory lock held from a batch's registration in Dagster until the transaction marking it
commits, so `partition_seq` follows Dagster's order of the keys exactly."""


def lock_partition_registration(conn: psycopg.Connection) -> None:
    """Serialise partition registrations until this transaction ends (take it before registering)."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_REGISTRATION_LOCK,))


def mark_partitions_registered(conn: psycopg.Connection, partition_keys: list[str]) -> None:
    """Record the keys as registered, numbered in the order they were registered in Dagster."""
    lock_pages(conn, partition_keys)
    conn.execute(
        """
        UPDATE pages SET partition_registered = true, partition_seq = v.seq
        FROM (SELECT key, nextval('pages_partition_seq') AS seq
                FROM unnest(%s::text[]) WITH ORDINALITY AS k(key, n) ORDER BY n) v
        WHERE pages.partition_key = v.key
        """,
        (partition_keys,),
    )


def lock_pages(conn: psycopg.Connection, partition_keys: Collection[str]) -> None:
    """Lock the `pages` rows of `partition_keys` until this transaction ends, in id order: the order
    every writer of several pages takes them in (store/knowledge.py, "Lock order")."""
    conn.execute(
        "SELECT 1 FROM pages WHERE partition_key = ANY(%s) ORDER BY id FOR NO KEY UPDATE",
        (list(partition_keys),),
    )


def lock_current_pages(conn: psycopg.Connection, versions: dict[str, tuple[str, str]]) -> set[str]:
    """Lock the rows of these pages (key → (tenant, content hash read earlier)), in id order, and
    return the keys still live with that text: the page of that tenant still holds a document
    whose hash is the one read. Retired, withdrawn and changed pages are left out."""
    rows = conn.execute(
        "SELECT partition_key, tenant_id, content_hash, document IS NOT NULL AS live FROM pages"
        " WHERE partition_key = ANY(%s) ORDER BY id FOR NO KEY UPDATE",
        (list(versions),),
    ).fetchall()
    return {
        r["partition_key"] for r in rows
        if r["live"] and (r["tenant_id"], r["content_hash"]) == versions[r["partition_key"]]
    }


@dataclass(frozen=True)
class PendingKey:
    """A page that needs a run, as the pages sensor sees it: no document, just what a run needs."""

    partition_key: str
    tenant_id: str
    partition_seq: int
    content_hash: str


_PROCESSABLE = "status IN ('fetched', 'not_modified') AND partition_registered"
_DUE = f"NOT {WAITING_OR_QUARANTINED}"
"""Not held back by its last failure (store/page_failures.py): no failure for its current text and
model, or one whose backoff has expired."""
_MODEL_DIFFERS = "(processed_model < %(model)s OR processed_model > %(model)s)"
"""Chunks made with another model (a page never processed has no processed_hash either: the text
test covers it). Written as two ranges so the `pages_processed_model` index answers it."""


def has_pending_pages(conn: psycopg.Connection, embedding_model: str) -> bool:
    """Whether any page needs a run now: three index probes (migration 0009), the sensor's idle tick.
    Pages held back by their failures (backing off, quarantined) do not count.

    The ordered scalar subquery makes the planner walk the partial index, which holds pending pages
    only (it cannot estimate the hash comparison, and an EXISTS would scan the table).
    """
    return conn.execute(
        f"""
        SELECT (SELECT 1 FROM pages WHERE {_PROCESSABLE} AND content_hash IS DISTINCT FROM processed_hash
                   AND {_DUE} ORDER BY tenant_id, partition_seq LIMIT 1) IS NOT NULL
            OR EXISTS (SELECT FROM pages WHERE {_PROCESSABLE} AND processed_model < %(model)s AND {_DUE})
            OR EXISTS (SELECT FROM pages WHERE {_PROCESSABLE} AND processed_model > %(model)s AND {_DUE}) AS pending
        """,
        {"model": embedding_model},
    ).fetchone()["pending"]


def tenants_still_crawling(conn: psycopg.Connection, tenant_ids: Collection[str]) -> dict[str, bool]:
    """The tenants with a crawl still running, each mapped to whether none of its pages has chunks
    yet (a new site: its first run is kept small, so answers come before the crawl ends)."""
    rows = conn.execute(
        "SELECT t, NOT EXISTS (SELECT FROM pages WHERE tenant_id = t AND processed_hash IS NOT NULL) AS new"
        " FROM unnest(%s::text[]) AS t"
        " WHERE EXISTS (SELECT FROM websites WHERE tenant_id = t AND status = 'crawling')",
        (list(tenant_ids),),
    ).fetchall()
    return {r["t"]: r["new"] for r in rows}


_NOT_IN_RANGES = (
    "NOT EXISTS (SELECT 1 FROM unnest(%(ex_tenants)s::text[], %(ex_first)s::bigint[], %(ex_last)s::bigint[])"
    " AS x(tenant_id, first, last) WHERE x.tenant_id = pages.tenant_id"
    " AND pages.partition_seq BETWEEN x.first AND x.last)"
)
"""Not in one of the `exclude_ranges` (tenant, first, last) of `pending_pages`: a queued or running run has it."""

_PENDING_PAGES = f"""
    WITH pending AS (
        SELECT tenant_id, partition_seq FROM pages
         WHERE {_PROCESSABLE} AND content_hash IS DISTINCT FROM processed_hash AND {_NOT_IN_RANGES} AND {_DUE}
        UNION ALL
        SELECT tenant_id, partition_seq FROM pages
         WHERE {_PROCESSABLE} AND {_MODEL_DIFFERS} AND {_NOT_IN_RANGES} AND {_DUE}
    ), tenants AS (
        SELECT tenant_id, min(partition_seq) AS oldest FROM pending
         WHERE tenant_id <> ALL(%(exclude)s)
         GROUP BY tenant_id ORDER BY oldest LIMIT %(max_tenants)s
    )
    SELECT p.partition_key, p.tenant_id, p.partition_seq, p.content_hash
    FROM tenants t CROSS JOIN LATERAL (
        SELECT partition_key, tenant_id, partition_seq, content_hash FROM pages
         WHERE tenant_id = t.tenant_id AND {_PROCESSABLE}
           AND (content_hash IS DISTINCT FROM processed_hash OR {_MODEL_DIFFERS}) AND {_NOT_IN_RANGES}
           AND {_DUE}
         ORDER BY partition_seq LIMIT %(per_tenant)s
    ) p
    ORDER BY t.oldest, p.partition_seq
"""
"""The tenants with the oldest pending registration, then each one's oldest pending pages."""


def pending_pages(
    conn: psycopg.Connection,
    embedding_model: str,
    *,
    pages_per_tenant: int,
    max_tenants: int,
    exclude_tenants: Collection[str] = (),
    exclude_ranges: Collection[tuple[str, int, int]] = (),
) -> list[PendingKey]:
    """Pages whose stored chunks are not of their current text and model, chosen fairly; pages held
    back by their failures (backing off, quarantined) are left out, so they never hold back the rest.

    Tenants are taken oldest pending registration first (at most `max_tenants`, leaving out
    `exclude_tenants`), and from each at most `pages_per_tenant` pages in registration order, so one
    tenant's backlog never hides another's work. Pages of a tenant whose `partition_seq` lies in one
    of its `exclude_ranges` (tenant, first, last) are left out: a queued or running run has them.
    Reads keys, tenant, order and hash, never documents.
    """
    rows = conn.execute(
        _PENDING_PAGES,
        {
            "model": embedding_model, "exclude": list(exclude_tenants),
            "max_tenants": max_tenants, "per_tenant": pages_per_tenant,
            "ex_tenants": [r[0] for r in exclude_ranges], "ex_first": [r[1] for r in exclude_ranges],
            "ex_last": [r[2] for r in exclude_ranges],
        },
    ).fetchall()
    return [PendingKey(**r) for r in rows]


def request_reprocessing(conn: psycopg.Connection, partition_keys: list[str]) -> dict[str, int]:
    """Make these pages pending again, so the pages sensor gives them page runs of their tenant;
    their stored chunks stay searchable until that run replaces them (embeddings of unchanged text
    are reused). Pages without text are left alone. The caller commits. Pages per tenant."""
    lock_pages(conn, partition_keys)
    rows = conn.execute(
        f"UPDATE pages SET processed_hash = NULL, updated_at = now()"
        f" WHERE partition_key = ANY(%s) AND {_PROCESSABLE} AND content_hash IS NOT NULL RETURNING tenant_id",
        (partition_keys,),
    ).fetchall()
    return dict(Counter(r["tenant_id"] for r in rows))


def count_pending(conn: psycopg.Connection, partition_keys: list[str], embedding_model: str) -> int:
    """How many of these pages still need a page run (new text or another model) and will get one:
    quarantined pages wait for an operator, not for a run."""
    return conn.execute(
        f"SELECT count(*) AS n FROM pages WHERE partition_key = ANY(%(keys)s) AND {_PROCESSABLE}"
        f" AND (content_hash IS DISTINCT FROM processed_hash OR {_MODEL_DIFFERS}) AND NOT {QUARANTINED}",
        {"keys": partition_keys, "model": embedding_model},
    ).fetchone()["n"]


def load_pages(conn: psycopg.Connection, partition_keys: list[str]) -> dict[str, PendingPage]:
    """The current document of each page (pages without one are left out)."""
    rows = conn.execute(
        """
        SELECT partition_key, tenant_id, website_id, url, content_hash, document
        FROM pages WHERE partition_key = ANY(%s) AND document IS NOT NULL
        """,
        (partition_keys,),
    ).fetchall()
    return {r["partition_key"]: PendingPage(**r) for r in rows}


def mark_pages_processed(conn: psycopg.Connection, processed: dict[str, str], embedding_model: str) -> None:
    """Record which content hash and embedding model each page's stored chunks were made from."""
    conn.execute(
        """
        UPDATE pages SET processed_hash = v.hash, processed_model = %s, updated_at = now()
        FROM unnest(%s::text[], %s::text[]) AS v(key, hash)
        WHERE pages.partition_key = v.key
        """,
        (embedding_model, list(processed), list(processed.values())),
    )


def website_page_keys(conn: psycopg.Connection, website_id: int) -> list[str]:
    """The partition keys of a website's pages."""
    rows = conn.execute("SELECT partition_key FROM pages WHERE website_id = %s ORDER BY id", (website_id,)).fetchall()
    return [r["partition_key"] for r in rows]


def page_status_counts(conn: psycopg.Connection, website_id: int) -> dict[str, int]:
    rows = conn.execute(
        "SELECT status, count(*) AS n FROM pages WHERE website_id = %s GROUP BY status", (website_id,)
    ).fetchall()
    return {r["status"]: r["n"] for r in rows}


def page_tenants(conn: psycopg.Connection, partition_keys: list[str]) -> dict[str, str]:
    """The tenant of each known page key."""
    rows = conn.execute(
        "SELECT partition_key, tenant_id FROM pages WHERE partition_key = ANY(%s)", (partition_keys,)
    ).fetchall()
    return {r["partition_key"]: r["tenant_id"] for r in rows}
