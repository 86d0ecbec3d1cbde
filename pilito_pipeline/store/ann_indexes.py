"""Per-tenant partial HNSW indexes: approximate vector search for the tenants large enough to need it.

Every other tenant is searched exactly (see retrieval/dense.py), so writes pay HNSW maintenance only
for rows of tenants that have their own graph. A tenant's indexes are

    CREATE INDEX CONCURRENTLY tenant_knowledge_ann_<hash>_{full,tldr} ON tenant_knowledge
        USING hnsw ({full,tldr}_embedding halfvec_cosine_ops) WITH (m = 16, ef_construction = 64)
        WHERE tenant_id = '<tenant>' AND NOT is_parent

and the same over `latent_terms` (sparsevec_ip_ops: the latent-term arm, retrieval/latent.py; rows
without latent terms are not in it), and the registry `tenant_ann_indexes` (migration 0005) names
them once all are valid. A tenant registered with fewer indexes (before the latent-term one
existed) is brought up to date by the next `ensure_tenant_ann_index`. Retrieval
trusts a tenant's indexes only when the registry names them AND PostgreSQL marks them valid.

Size = the tenant's searchable (non-parent) chunks, read from `bm25_tenant_stats` (kept exact by
the triggers of migration 0002; O(1)). Hysteresis: indexes are built at `min_chunks` and dropped
only below `min_chunks * SHRINK_FRACTION`, so a tenant near the threshold does not flap.

Concurrency: builds and drops of one tenant serialise on a session-level advisory lock (CREATE /
DROP INDEX CONCURRENTLY cannot run inside a transaction block, so the connection must be in
autocommit mode and the lock cannot be transaction-scoped). A caller that finds the lock taken
does not wait for another process's build: it answers with what is ready now. An index left
INVALID by a build that crashed or was cancelled is dropped and rebuilt by the next call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from pilito_pipeline.store.db import connect
from pilito_pipeline.store.tenants import check_tenant_id

DEFAULT_MIN_CHUNKS = 20_000
SHRINK_FRACTION = 0.5
"""A tenant's indexes are dropped once it has fewer than `min_chunks * SHRINK_FRACTION` chunks."""
ANN_LOCK_NAMESPACE = 0x616E6E69  # "anni": first key of the two-key advisory lock per tenant
EMBEDDING_COLUMNS = ("full_embedding", "tldr_embedding", "latent_terms")
_OPERATOR_CLASSES = {"full_embedding": "halfvec_cosine_ops", "tldr_embedding": "halfvec_cosine_ops",
                     "latent_terms": "sparsevec_ip_ops"}
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64
BUILD_MAINTENANCE_WORK_MEM = "512MB"
"""Session setting during a build: HNSW builds fast while the graph fits in maintenance_work_mem."""


# Index name -> is it valid? (NULL when no such index exists), for names in the search path.
_INDEX_STATE_SQL = """
SELECT n.name, i.indisvalid
  FROM unnest(%s::text[]) AS n(name)
  LEFT JOIN pg_index i ON i.indexrelid = to_regclass(quote_ident(n.name))
                      AND i.indrelid = 'tenant_knowledge'::regclass
"""

_READY_SQL = """
SELECT EXISTS (
    SELECT 1 FROM tenant_ann_indexes r
     WHERE r.tenant_id = %s
       AND NOT EXISTS (SELECT 1 FROM unnest(r.index_names) AS n(name)
                         LEFT JOIN pg_index i ON i.indexrelid = to_regclass(quote_ident(n.name))
                                             AND i.indrelid = 'tenant_knowledge'::regclass
                        WHERE i.indisvalid IS NOT TRUE))
"""


def ann_index_names(tenant_id: str) -> tuple[str, ...]:
    """The tenant's index names, one per embedding column, in EMBEDDING_COLUMNS order: deterministic,
    short (< 63 bytes) and safe whatever the tenant id (a hash, not the id, names them)."""
    check_tenant_id(tenant_id)
    digest = hashlib.sha256(tenant_id.encode()).hexdigest()[:16]
    return tuple(f"tenant_knowledge_ann_{digest}_{column.removesuffix('_embedding')}" for column in EMBEDDING_COLUMNS)


def tenant_ann_index_ready(conn: psycopg.Connection, tenant_id: str) -> bool:
    """Whether the registry names the tenant's indexes and every one of them is valid."""
    with conn.cursor(row_factory=tuple_row) as cur:
        return bool(cur.execute(_READY_SQL, (tenant_id,)).fetchone()[0])


def searchable_chunk_count(conn: psycopg.Connection, tenant_id: str) -> int:
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute("SELECT chunk_count FROM bm25_tenant_stats WHERE tenant_id = %s", (tenant_id,)).fetchone()
    return int(row[0]) if row else 0


def ensure_tenant_ann_index(
    url_or_conn: str | psycopg.Connection, tenant_id: str, *, min_chunks: int = DEFAULT_MIN_CHUNKS
) -> str | None:
    """Bring the tenant's ANN indexes in line with its size; return the name of its full-text
    index when the tenant's indexes are ready, else None.

    - at least `min_chunks` searchable chunks: build what is missing (or INVALID), register;
    - registered and still at least `min_chunks * SHRINK_FRACTION`: keep (repair if needed);
    - registered and below that: drop (unregister first, so no new query plans on them);
    - another session building or dropping this tenant's indexes: return what is ready now.
    Idempotent: a call that finds everything in place writes nothing.
    `url_or_conn`: a database URL, or a connection in autocommit mode that is not in a transaction.
    """
    if min_chunks < 1:
        raise ValueError(f"min_chunks must be at least 1, got {min_chunks}")
    names = ann_index_names(tenant_id)
    with _autocommit(url_or_conn) as conn:
        ready = tenant_ann_index_ready(conn, tenant_id) and _registered_names(conn, tenant_id) == list(names)
        chunks = searchable_chunk_count(conn, tenant_id)
        if ready and chunks >= min_chunks * SHRINK_FRACTION:
            return names[0]
        if not ready and chunks < min_chunks and not _registered(conn, tenant_id) and not _existing(conn, names):
            return None
        with _tenant_lock(conn, tenant_id, wait=False) as locked:
            if not locked:
                return names[0] if tenant_ann_index_ready(conn, tenant_id) else None
            chunks = searchable_chunk_count(conn, tenant_id)  # re-read under the lock
            registered = _registered(conn, tenant_id)
            if chunks < min_chunks * SHRINK_FRACTION or (chunks < min_chunks and not registered):
                _drop_locked(conn, tenant_id, names)
                return None
            _build_locked(conn, tenant_id, names, chunks, registered)
            return names[0]


def drop_tenant_ann_index(url_or_conn: str | psycopg.Connection, tenant_id: str) -> bool:
    """Unregister and drop the tenant's ANN indexes (waits for a build in progress to end);
    True when something was there. `ensure_tenant_ann_index` calls this logic itself for tenants
    that shrank below the hysteresis bound; call it directly when a tenant is removed."""
    names = ann_index_names(tenant_id)
    with _autocommit(url_or_conn) as conn, _tenant_lock(conn, tenant_id, wait=True):
        return _drop_locked(conn, tenant_id, names)


def tenants_needing_ann_index(conn: psycopg.Connection, min_chunks: int = DEFAULT_MIN_CHUNKS) -> list[str]:
    """Tenants whose ANN indexes do not match their size, largest first: unregistered tenants with
    at least `min_chunks` chunks, registered tenants with a missing or INVALID index, and registered
    tenants below the hysteresis bound. `ensure_tenant_ann_index` settles each one."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            """
            SELECT coalesce(s.tenant_id, r.tenant_id)
              FROM bm25_tenant_stats s FULL JOIN tenant_ann_indexes r USING (tenant_id)
             WHERE (r.tenant_id IS NULL AND s.chunk_count >= %(min)s)
                OR (r.tenant_id IS NOT NULL AND (coalesce(s.chunk_count, 0) < %(min)s * %(shrink)s
                    OR cardinality(r.index_names) < %(indexes)s
                    OR EXISTS (SELECT 1 FROM unnest(r.index_names) AS n(name)
                                 LEFT JOIN pg_index i ON i.indexrelid = to_regclass(quote_ident(n.name))
                                WHERE i.indisvalid IS NOT TRUE)))
             ORDER BY coalesce(s.chunk_count, 0) DESC, 1
            """,
            {"min": int(min_chunks), "shrink": SHRINK_FRACTION, "indexes": len(EMBEDDING_COLUMNS)},
        ).fetchall()
    return [row[0] for row in rows]


# -- internals ---------------------------------------------------------------------------------------

@contextmanager
def _autocommit(url_or_conn: str | psycopg.Connection) -> Iterator[psycopg.Connection]:
    if isinstance(url_or_conn, str):
        with connect(url_or_conn, autocommit=True) as conn:
            yield conn
        return
    if not url_or_conn.autocommit or url_or_conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise ValueError("ANN index builds need an autocommit connection outside any transaction"
                         " (CREATE INDEX CONCURRENTLY cannot run in a transaction block)")
    yield url_or_conn


@contextmanager
def _tenant_lock(conn: psycopg.Connection, tenant_id: str, *, wait: bool) -> Iterator[bool]:
    with conn.cursor(row_factory=tuple_row) as cur:
        if wait:
            cur.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (ANN_LOCK_NAMESPACE, tenant_id))
            locked = True
        else:
            locked = bool(cur.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))",
                                      (ANN_LOCK_NAMESPACE, tenant_id)).fetchone()[0])
    try:
        yield locked
    finally:
        if locked and not conn.closed and not conn.broken:
            conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (ANN_LOCK_NAMESPACE, tenant_id))


def _registered(conn: psycopg.Connection, tenant_id: str) -> bool:
    return _registered_names(conn, tenant_id) is not None


def _registered_names(conn: psycopg.Connection, tenant_id: str) -> list[str] | None:
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute("SELECT index_names FROM tenant_ann_indexes WHERE tenant_id = %s", (tenant_id,)).fetchone()
    return None if row is None else list(row[0])


def _index_states(conn: psycopg.Connection, names: tuple[str, ...]) -> dict[str, bool | None]:
    with conn.cursor(row_factory=tuple_row) as cur:
        return dict(cur.execute(_INDEX_STATE_SQL, (list(names),)).fetchall())


def _existing(conn: psycopg.Connection, names: tuple[str, ...]) -> bool:
    return any(state is not None for state in _index_states(conn, names).values())


def _build_locked(conn: psycopg.Connection, tenant_id: str, names: tuple[str, ...], chunks: int,
                  registered: bool) -> None:
    states = _index_states(conn, names)
    if registered and all(states.values()) and _registered_names(conn, tenant_id) == list(names):
        return
    missing = [(name, column) for name, column in zip(names, EMBEDDING_COLUMNS, strict=True) if not states[name]]
    if missing:
        with conn.cursor(row_factory=tuple_row) as cur:
            previous = cur.execute("SELECT current_setting('maintenance_work_mem')").fetchone()[0]
        conn.execute("SELECT set_config('maintenance_work_mem', %s, false)", (BUILD_MAINTENANCE_WORK_MEM,))
        try:
            for name, column in missing:
                if states[name] is False:  # INVALID: left by a build that crashed or was cancelled
                    conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(name)))
                conn.execute(sql.SQL(
                    "CREATE INDEX CONCURRENTLY {name} ON tenant_knowledge USING hnsw ({column} {operators})"
                    " WITH (m = {m}, ef_construction = {ef}) WHERE tenant_id = {tenant} AND NOT is_parent"
                ).format(name=sql.Identifier(name), column=sql.Identifier(column),
                         operators=sql.SQL(_OPERATOR_CLASSES[column]), m=sql.Literal(HNSW_M),
                         ef=sql.Literal(HNSW_EF_CONSTRUCTION), tenant=sql.Literal(tenant_id)))
        finally:
            conn.execute("SELECT set_config('maintenance_work_mem', %s, false)", (previous,))
    conn.execute(
        "INSERT INTO tenant_ann_indexes (tenant_id, index_names, chunk_count_at_build) VALUES (%s, %s, %s)"
        " ON CONFLICT (tenant_id) DO UPDATE SET index_names = EXCLUDED.index_names,"
        " chunk_count_at_build = EXCLUDED.chunk_count_at_build, built_at = now()",
        (tenant_id, list(names), chunks),
    )


def _drop_locked(conn: psycopg.Connection, tenant_id: str, names: tuple[str, ...]) -> bool:
    with conn.cursor(row_factory=tuple_row) as cur:
        unregistered = cur.execute("DELETE FROM tenant_ann_indexes WHERE tenant_id = %s RETURNING 1",
                                   (tenant_id,)).fetchone() is not None
    existed = _existing(conn, names)
    for name in names:
        conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(name)))
    return unregistered or existed
