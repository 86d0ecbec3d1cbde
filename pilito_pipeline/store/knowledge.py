"""Exactly-once writes of the tenant knowledge base (chunks + embeddings), source by source.

A *source* is everything one page, manual text or FAQ contributes: the rows sharing
(tenant_id, chunk_type, source_id). `upsert_sources` makes the given sources end with exactly the
given rows, in one transaction: rows that did not change are filtered out before they reach the
database (so an unchanged re-run writes nothing and touches no index), rows the sources did not
have yet are binary-COPYed straight into the table (ids drawn beforehand), changed ones are
binary-COPYed into a temporary table and merged with INSERT ... ON CONFLICT DO UPDATE, and chunks
the sources no longer have are deleted. The BM25 postings of the chunks inserted are built here
(`bm25_segment`: one numpy sort of their term occurrences) and COPYed in while the insert trigger
leaves them alone (migration 0012); updated and deleted chunks are re-indexed by the triggers.
Writers take one transaction-level advisory lock per source, in sorted order, so concurrent
writers of overlapping sources serialise per source and never deadlock.

Lock order: every writer that holds more than one lock takes them in this order, so no two writers
can wait for each other (Postgres would abort one as a deadlock):

1. the per-source advisory locks of every source it will touch (`lock_sources`: sorted keys);
2. the `pages` rows of those pages, in id order (`pages.lock_pages`, `pages.lock_current_pages`);
3. `tenant_knowledge` rows (and the BM25 postings their triggers keep).

The page run (`store_pages`) and the crawl's retirement (`store.retirement`) follow it. A writer of
one `pages` row that holds nothing else (the crawl recording a fetched page, in its own short
transaction) needs no advisory lock: it can wait, but nobody waits for it while it does. Writers
of several `pages` rows (partition registration, a backfill's hand-over) lock them in id order.
A page run also checks, under these locks, that each page is still live with the text it read
(`store_pages`), so a crawl that retired or changed a page meanwhile is never undone.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg
from pgvector import HalfVector
from pgvector import SparseVector as PgSparseVector
from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb

from pilito_pipeline.sparse_vector import SparseVector
from pilito_pipeline.store.page_failures import clear_page_failures
from pilito_pipeline.store.pages import lock_current_pages, mark_pages_processed

SourceKey = tuple[str, str, str]
"""(tenant_id, chunk_type, source_id)"""

KNOWLEDGE_LOCK_NAMESPACE = 0x6B6E6F77  # "know": first key of the two-key advisory locks


@dataclass
class KnowledgeRow:
    """One `tenant_knowledge` row. Parent rows carry no embeddings."""

    tenant_id: str
    chunk_type: str
    source_id: str
    document_id: str | None
    chunk_index: int
    total_chunks: int
    is_parent: bool
    parent_chunk_index: int | None
    section_title: str
    full_text: str
    tldr: str
    word_count: int
    search_terms: list[str]
    content_hash: str
    metadata: dict[str, Any] = field(default_factory=dict)
    embedding_model: str | None = None
    full_embedding: np.ndarray | None = field(default=None, repr=False)
    tldr_embedding: np.ndarray | None = field(default=None, repr=False)
    latent_terms: SparseVector | None = field(default=None, repr=False)
    """The full text's latent terms (`embed/latent_terms.py`), where the embedder has a sparse head."""

    @property
    def source_key(self) -> SourceKey:
        return (self.tenant_id, self.chunk_type, self.source_id)


@dataclass(frozen=True)
class UpsertStats:
    """What one `upsert_sources` call did, in rows."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0

    @property
    def written(self) -> int:
        return self.inserted + self.updated + self.deleted


# Column name -> COPY type, in the order rows are written.
_COLUMNS: dict[str, str] = {
    "tenant_id": "text",
    "chunk_type": "text",
    "source_id": "text",
    "chunk_index": "int4",
    "document_id": "text",
    "total_chunks": "int4",
    "is_parent": "bool",
    "parent_chunk_index": "int4",
    "section_title": "text",
    "full_text": "text",
    "tldr": "text",
    "word_count": "int4",
    "search_terms": "text[]",
    "content_hash": "text",
    "metadata": "jsonb",
    "embedding_model": "text",
    "full_embedding": "halfvec",
    "tldr_embedding": "halfvec",
    "latent_terms": "sparsevec",
}
_PRE_ENCODED = {"search_terms", "full_embedding", "tldr_embedding", "latent_terms"}
"""Columns `_copy_values` sends already in PostgreSQL's binary format (declared `bytea` to psycopg,
which passes bytes through; the server reads them with the column's own type): psycopg's generic
list dumper and pgvector's HalfVector are pure Python and took a quarter of a first write's time."""
_COPY_TYPES = ["bytea" if name in _PRE_ENCODED else kind for name, kind in _COLUMNS.items()] + ["text"]
_IDENTITY = ("tenant_id", "chunk_type", "source_id", "chunk_index")
_CONTENT = tuple(c for c in _COLUMNS if c not in _IDENTITY)
_ALL = ", ".join(_COLUMNS)
_WRITTEN = {**_COLUMNS, "row_digest": "text"}
"""What a write sends: every column plus the row's digest (`row_digest`)."""
_COMPARED = (*_CONTENT, "row_digest")
_ALL_WRITTEN = ", ".join(_WRITTEN)


def _row_of(table: str, columns: Iterable[str]) -> str:
    return "(" + ", ".join(f"{table}.{c}" for c in columns) + ")"


_CREATE_INCOMING = (
    "DROP TABLE IF EXISTS knowledge_incoming;"
    " CREATE TEMPORARY TABLE knowledge_incoming ("
    + ", ".join(f"{name} {kind}" for name, kind in _WRITTEN.items())
    + f", PRIMARY KEY ({', '.join(_IDENTITY)})) ON COMMIT DROP"
)

_MERGE = f"""
WITH changed AS (
    SELECT i.* FROM knowledge_incoming i
    LEFT JOIN tenant_knowledge t
           ON t.tenant_id = i.tenant_id AND t.chunk_type = i.chunk_type
          AND t.source_id = i.source_id AND t.chunk_index = i.chunk_index
    WHERE t.id IS NULL OR {_row_of("t", _COMPARED)} IS DISTINCT FROM {_row_of("i", _COMPARED)}
), written AS (
    INSERT INTO tenant_knowledge AS t ({_ALL_WRITTEN})
    SELECT {_ALL_WRITTEN} FROM changed
    ON CONFLICT ON CONSTRAINT tenant_knowledge_chunk_identity DO UPDATE
       SET {", ".join(f"{c} = EXCLUDED.{c}" for c in _COMPARED)}, updated_at = now()
       WHERE {_row_of("t", _COMPARED)} IS DISTINCT FROM {_row_of("EXCLUDED", _COMPARED)}
    RETURNING t.id, (t.xmax = 0) AS inserted, t.tenant_id, t.chunk_type, t.source_id, t.chunk_index
)
SELECT * FROM written
"""

_NEW_IDS = "SELECT nextval(pg_get_serial_sequence('tenant_knowledge', 'id')) FROM generate_series(1, %s)"

_POSTINGS_BY_WRITER = "SELECT set_config('pilito.bm25_postings_by_writer', %s, true)"
"""'on' while `upsert_sources` inserts: the insert trigger then leaves the inserted rows' postings
to it (migration 0012)."""

_COPY_POSTINGS = (
    "COPY bm25_postings (tenant_id, term, chunk_type, segment, chunk_ids, tfs, chunk_lengths)"
    " FROM STDIN (FORMAT BINARY)"
)

_ADD_TENANT_STATS = """
INSERT INTO bm25_tenant_stats AS s (tenant_id, chunk_count, total_length)
SELECT * FROM unnest(%s::text[], %s::int8[], %s::int8[]) ORDER BY 1
ON CONFLICT (tenant_id) DO UPDATE
   SET chunk_count = s.chunk_count + EXCLUDED.chunk_count,
       total_length = s.total_length + EXCLUDED.total_length
"""

_DELETE_ROWS = """
DELETE FROM tenant_knowledge t
USING unnest(%s::text[], %s::text[], %s::text[], %s::int4[]) AS s(tenant_id, chunk_type, source_id, chunk_index)
WHERE t.tenant_id = s.tenant_id AND t.chunk_type = s.chunk_type AND t.source_id = s.source_id
  AND t.chunk_index = s.chunk_index
"""

_SELECT_DIGESTS = """
SELECT t.tenant_id, t.chunk_type, t.source_id, t.chunk_index, t.row_digest FROM tenant_knowledge t
JOIN unnest(%s::text[], %s::text[], %s::text[]) AS s(tenant_id, chunk_type, source_id)
  USING (tenant_id, chunk_type, source_id)
"""

_DELETE_SOURCES = """
DELETE FROM tenant_knowledge t
USING unnest(%s::text[], %s::text[], %s::text[]) AS s(tenant_id, chunk_type, source_id)
WHERE t.tenant_id = s.tenant_id AND t.chunk_type = s.chunk_type AND t.source_id = s.source_id
"""

_SELECT_SOURCES = f"""
SELECT {_ALL} FROM tenant_knowledge t
JOIN unnest(%s::text[], %s::text[], %s::text[]) AS s(tenant_id, chunk_type, source_id)
  USING (tenant_id, chunk_type, source_id)
ORDER BY tenant_id, chunk_type, source_id, chunk_index
"""

_SELECT_REUSABLE = """
SELECT encode(sha256(convert_to(CASE WHEN t.section_title <> '' THEN t.section_title || E'\\n' || t.full_text
                                     ELSE t.full_text END, 'UTF8')), 'hex'), t.full_embedding, t.latent_terms,
       encode(sha256(convert_to(t.tldr, 'UTF8')), 'hex'), t.tldr_embedding
FROM tenant_knowledge t
JOIN unnest(%s::text[], %s::text[], %s::text[]) AS s(tenant_id, chunk_type, source_id)
  USING (tenant_id, chunk_type, source_id)
WHERE t.embedding_model = %s AND NOT t.is_parent
"""


def embedding_text(row: KnowledgeRow) -> str:
    """What a chunk's full-text embedding is computed from: its heading path ("Page › Section")
    on a line of its own, then its text, so a window in the middle of a section still says what
    page and section it is about. `_SELECT_REUSABLE` computes the same text in SQL."""
    return f"{row.section_title}\n{row.full_text}" if row.section_title else row.full_text


def text_digest(text: str) -> str:
    """The key `reusable_embeddings` files an embedding under: sha256 of the UTF-8 text, hex."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def row_digest(row: KnowledgeRow) -> str:
    """Digest of everything `row` stores (vectors at the stored half precision): equal digests
    mean writing the row again would change nothing."""
    digest = hashlib.sha256()
    scalars = [
        row.document_id, row.total_chunks, row.is_parent, row.parent_chunk_index, row.section_title,
        row.full_text, row.tldr, row.word_count, list(row.search_terms), row.content_hash, row.metadata,
        row.embedding_model,
    ]
    digest.update(json.dumps(scalars, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8"))
    for vector in (row.full_embedding, row.tldr_embedding):
        digest.update(b"\x00" if vector is None else b"\x01" + np.asarray(vector, dtype=np.float16).tobytes())
    digest.update(b"\x00" if row.latent_terms is None else b"\x01" + binary_sparsevec(row.latent_terms))
    return digest.hexdigest()


def source_lock_keys(keys: Iterable[SourceKey]) -> list[int]:
    """The advisory-lock keys of `keys`: distinct signed 32-bit hashes, sorted (the lock order)."""
    locks = set()
    for key in keys:
        digest = hashlib.blake2b("\x1f".join(key).encode("utf-8"), digest_size=4).digest()
        locks.add(int.from_bytes(digest, "big", signed=True))
    return sorted(locks)


def lock_sources(conn: psycopg.Connection, keys: Iterable[SourceKey]) -> None:
    """Take the transaction-level advisory locks of `keys`, one by one in sorted order."""
    conn.execute(
        "SELECT pg_advisory_xact_lock(%s, k) FROM unnest(%s::int4[]) AS k",
        (KNOWLEDGE_LOCK_NAMESPACE, source_lock_keys(keys)),
    )


def upsert_sources(
    conn: psycopg.Connection, rows_by_source: Mapping[SourceKey, Sequence[KnowledgeRow]]
) -> UpsertStats:
    """Make each given source hold exactly its given rows (an empty list deletes the source).

    One transaction (a savepoint when the caller already has one open); idempotent: rows whose
    digest matches the stored one are not even sent, so rewriting unchanged rows writes nothing.
    Safe to call from many processes at once (per-source locks, taken in a consistent order; a row
    its source does not hold under the lock is new, so it is COPYed in without a merge).
    """
    _validate(rows_by_source)
    if not rows_by_source:
        return UpsertStats()
    keys = sorted(rows_by_source)
    incoming = [(row, row_digest(row)) for key in keys for row in rows_by_source[key]]
    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
        lock_sources(conn, keys)
        stored = {tuple(r[:4]): r[4] for r in cur.execute(_SELECT_DIGESTS, _key_columns(keys))}
        changed = [(row, digest) for row, digest in incoming if stored.get(_identity(row)) != digest]
        kept = {_identity(row) for row, _ in incoming}
        stale = [identity for identity in stored if identity not in kept]
        fresh = [(row, digest) for row, digest in changed if _identity(row) not in stored]
        rewritten = [(row, digest) for row, digest in changed if _identity(row) in stored]
        term_elements: dict[str, bytes] = {}  # shared by both writes: a term is encoded once
        cur.execute(_POSTINGS_BY_WRITER, ("on",))
        new_chunks = _insert_fresh(cur, fresh, term_elements)
        merged, updated = _merge_rewritten(cur, rewritten, term_elements)
        new_chunks += merged
        cur.execute(_POSTINGS_BY_WRITER, ("",))
        new_chunks.sort(key=lambda chunk: chunk[0])
        inserted = len(new_chunks)
        _index_new_chunks(cur, [(chunk_id, row) for chunk_id, row in new_chunks if not row.is_parent])
        deleted = 0
        if stale:
            deleted = cur.execute(_DELETE_ROWS, [list(column) for column in zip(*stale, strict=True)]).rowcount
    unchanged = len(incoming) - inserted - updated
    return UpsertStats(inserted=inserted, updated=updated, unchanged=unchanged, deleted=deleted)


def _insert_fresh(
    cur: psycopg.Cursor[Any], fresh: Sequence[tuple[KnowledgeRow, str]], term_elements: dict[str, bytes]
) -> list[tuple[int, KnowledgeRow]]:
    """COPY the rows their source did not hold (no merge needed: the source is locked); (id, row) each."""
    if not fresh:
        return []
    ids = [chunk_id for (chunk_id,) in cur.execute(_NEW_IDS, (len(fresh),))]
    with cur.copy(f"COPY tenant_knowledge (id, {_ALL_WRITTEN}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["int8", *_COPY_TYPES])
        for chunk_id, (row, digest) in zip(ids, fresh, strict=True):
            copy.write_row((chunk_id, *_copy_values(row, term_elements), digest))
    return list(zip(ids, (row for row, _ in fresh), strict=True))


def _merge_rewritten(
    cur: psycopg.Cursor[Any], rewritten: Sequence[tuple[KnowledgeRow, str]], term_elements: dict[str, bytes]
) -> tuple[list[tuple[int, KnowledgeRow]], int]:
    """Merge the changed rows of identities the source held: (the chunks inserted as new, with their
    ids; the number of rows updated in place)."""
    if not rewritten:
        return [], 0
    cur.execute(_CREATE_INCOMING)
    with cur.copy(f"COPY knowledge_incoming ({_ALL_WRITTEN}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(_COPY_TYPES)
        for row, digest in rewritten:
            copy.write_row((*_copy_values(row, term_elements), digest))
    cur.execute(f"ANALYZE knowledge_incoming ({', '.join(_IDENTITY)})")  # what the merge joins on
    written = cur.execute(_MERGE).fetchall()
    by_identity = {_identity(row): row for row, _ in rewritten}
    inserted = [(chunk_id, by_identity[tuple(identity)]) for chunk_id, is_new, *identity in written if is_new]
    return inserted, sum(1 for _, is_new, *_ in written if not is_new)


def _index_new_chunks(cur: psycopg.Cursor[Any], chunks: Sequence[tuple[int, KnowledgeRow]]) -> None:
    """Add freshly inserted searchable chunks (id, row), in ascending id order, to the BM25 postings
    as one segment and to the tenants' statistics: what bm25_add does for an INSERT statement."""
    if not chunks:
        return
    segment = cur.execute("SELECT nextval('bm25_segments')").fetchone()[0]
    with cur.copy(_COPY_POSTINGS) as copy:
        copy.set_types(["text", "text", "text", "int8", "bytea", "bytea", "bytea"])
        for tenant_id, term, chunk_type, chunk_ids, tfs, chunk_lengths in bm25_segment(chunks):
            copy.write_row((tenant_id, term, chunk_type, segment, chunk_ids, tfs, chunk_lengths))
    totals: dict[str, list[int]] = {}
    for _, row in chunks:
        tenant = totals.setdefault(row.tenant_id, [0, 0])
        tenant[0] += 1
        tenant[1] += len(row.search_terms)
    cur.execute(_ADD_TENANT_STATS, (list(totals), [count for count, _ in totals.values()],
                                    [length for _, length in totals.values()]))


def bm25_segment(chunks: Sequence[tuple[int, KnowledgeRow]]) -> list[tuple[str, str, str, bytes, bytes, bytes]]:
    """The `bm25_postings` rows of `chunks` (id, row; ascending ids, no parents) as one segment:
    (tenant_id, term, chunk_type, chunk_ids, tfs, chunk_lengths), the arrays in PostgreSQL's binary
    int8[] / int4[] / int4[] format, each row's chunks in id order, rows sorted by (tenant_id, term,
    chunk_type): the rows bm25_add builds for the same chunks, counted in numpy instead of SQL."""
    vocabulary: dict[str, int] = {}
    groups: dict[tuple[str, str], int] = {}
    terms = np.array([vocabulary.setdefault(t, len(vocabulary)) for _, row in chunks for t in row.search_terms],
                     dtype=np.int64)
    lengths = np.array([len(row.search_terms) for _, row in chunks], dtype=np.int64)
    group_of_chunk = np.array([groups.setdefault((row.tenant_id, row.chunk_type), len(groups)) for _, row in chunks],
                              dtype=np.int64)
    # One number per (tenant, chunk type, term): a posting row. Occurrences come in chunk order, so
    # a stable sort by posting row leaves each row's occurrences in chunk (id) order.
    posting = np.repeat(group_of_chunk, lengths) * len(vocabulary) + terms
    chunk_of = np.repeat(np.arange(len(chunks)), lengths)
    order = np.argsort(posting, kind="stable")
    posting, chunk_of = posting[order], chunk_of[order]
    pair_starts = np.flatnonzero(np.diff(posting, prepend=-1) | np.diff(chunk_of, prepend=-1))
    tfs = np.diff(pair_starts, append=len(posting))  # occurrences of the term in the chunk
    pair_posting, pair_chunk = posting[pair_starts], chunk_of[pair_starts]
    row_starts = np.flatnonzero(np.diff(pair_posting, prepend=-1))
    ids = np.array([chunk_id for chunk_id, _ in chunks], dtype=np.int64)
    id_elements = _binary_elements(ids[pair_chunk], ">i8")
    tf_elements = _binary_elements(tfs, ">i4")
    length_elements = _binary_elements(lengths[pair_chunk], ">i4")
    names, group_names = list(vocabulary), list(groups)
    segment = []
    bounds = np.append(row_starts, len(pair_posting)).tolist()
    for start, end, key in zip(bounds[:-1], bounds[1:], pair_posting[row_starts].tolist(), strict=True):
        group, term = divmod(key, len(vocabulary))
        tenant_id, chunk_type = group_names[group]
        segment.append((
            tenant_id, names[term], chunk_type,
            _ARRAY_HEADER.pack(1, 0, _INT8_OID, end - start, 1) + id_elements[start * 12:end * 12],
            _ARRAY_HEADER.pack(1, 0, _INT4_OID, end - start, 1) + tf_elements[start * 8:end * 8],
            _ARRAY_HEADER.pack(1, 0, _INT4_OID, end - start, 1) + length_elements[start * 8:end * 8],
        ))
    segment.sort(key=lambda posting_row: posting_row[:3])
    return segment


def _binary_elements(values: np.ndarray, dtype: str) -> memoryview:
    """`values` as the elements of a binary integer array: each its byte length, then its value."""
    elements = np.empty(len(values), dtype=[("length", ">i4"), ("value", dtype)])
    elements["length"] = np.dtype(dtype).itemsize
    elements["value"] = values
    return memoryview(elements.tobytes())


@dataclass(frozen=True)
class PageVersion:
    """The chunks of one crawled page (a `website` source) and the extracted text they were made from."""

    tenant_id: str
    content_hash: str
    rows: Sequence[KnowledgeRow]


@dataclass(frozen=True)
class StoredPages:
    """What `store_pages` wrote."""

    stats: UpsertStats
    skipped: list[str]
    """Pages not written: retired, withdrawn or changed since the run read them (sorted keys)."""


def store_pages(conn: psycopg.Connection, pages: Mapping[str, PageVersion], embedding_model: str) -> StoredPages:
    """Make each page (by partition key) hold exactly its rows and mark it processed for its content
    hash and `embedding_model`, in one transaction: a page's state advances with its chunks or not at
    all, so a writer killed at any point leaves the page pending and a rerun converges. Their
    failure records (store/page_failures.py) go in the same transaction.

    Only pages still live with the content hash the rows were made from are written: under the
    sources' locks and the pages' row locks (the lock order above) each page is checked; a page a
    crawl retired, withdrew or changed since the run read it is skipped, not written back."""
    with conn.transaction():
        lock_sources(conn, [(page.tenant_id, "website", key) for key, page in pages.items()])
        current = lock_current_pages(conn, {key: (page.tenant_id, page.content_hash) for key, page in pages.items()})
        written = {key: page for key, page in pages.items() if key in current}
        stats = upsert_sources(conn, {(page.tenant_id, "website", key): page.rows for key, page in written.items()})
        mark_pages_processed(conn, {key: page.content_hash for key, page in written.items()}, embedding_model)
        clear_page_failures(conn, list(written))
    return StoredPages(stats, sorted(set(pages) - current))


def _identity(row: KnowledgeRow) -> tuple[str, str, str, int]:
    return (row.tenant_id, row.chunk_type, row.source_id, row.chunk_index)


def delete_sources(conn: psycopg.Connection, keys: Iterable[SourceKey]) -> int:
    """Remove every chunk of `keys` (pages that are gone); returns the number of rows deleted."""
    keys = sorted(set(keys))
    if not keys:
        return 0
    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
        lock_sources(conn, keys)
        return cur.execute(_DELETE_SOURCES, _key_columns(keys)).rowcount


def load_sources(conn: psycopg.Connection, keys: Iterable[SourceKey]) -> dict[SourceKey, list[KnowledgeRow]]:
    """The stored rows of `keys` in chunk order; every asked key is present (empty when none)."""
    keys = sorted(set(keys))
    found: dict[SourceKey, list[KnowledgeRow]] = {key: [] for key in keys}
    if not keys:
        return found
    with conn.cursor(row_factory=tuple_row) as cur:
        for values in cur.execute(_SELECT_SOURCES, _key_columns(keys)):
            row = _row_from(values)
            found[row.source_key].append(row)
    return found


def reusable_embeddings(
    conn: psycopg.Connection, keys: Iterable[SourceKey], model_name: str
) -> tuple[dict[str, np.ndarray], dict[str, SparseVector]]:
    """Embeddings already stored for the texts of `keys` by `model_name`, by `text_digest(text)`,
    and the full texts' latent terms, by the same digest.

    Full texts and TL;DRs share the map: an embedding depends only on its text and model.
    """
    keys = sorted(set(keys))
    found: dict[str, np.ndarray] = {}
    latent: dict[str, SparseVector] = {}
    if not keys:
        return found, latent
    with conn.cursor(row_factory=tuple_row) as cur:
        for full_digest, full_vector, full_latent, tldr_digest, tldr_vector in cur.execute(
            _SELECT_REUSABLE, (*_key_columns(keys), model_name)
        ):
            if full_vector is not None:
                found[full_digest] = _to_array(full_vector)
            if full_latent is not None:
                latent[full_digest] = _to_sparse(full_latent)
            if tldr_vector is not None:
                found[tldr_digest] = _to_array(tldr_vector)
    return found, latent


def _validate(rows_by_source: Mapping[SourceKey, Sequence[KnowledgeRow]]) -> None:
    for key, rows in rows_by_source.items():
        seen: set[int] = set()
        for row in rows:
            where = f"source {key} chunk {row.chunk_index}"
            if row.source_key != tuple(key):
                raise ValueError(f"{where}: row belongs to source {row.source_key}, not {key}")
            if row.chunk_index in seen:
                raise ValueError(f"{where}: chunk_index appears twice")
            seen.add(row.chunk_index)
            has_embedding = row.full_embedding is not None or row.tldr_embedding is not None
            if has_embedding and not row.embedding_model:
                raise ValueError(f"{where}: has an embedding but no embedding_model")
            for name in ("full_embedding", "tldr_embedding"):
                vector = getattr(row, name)
                if vector is not None and (np.ndim(vector) != 1 or not np.all(np.isfinite(vector))):
                    raise ValueError(f"{where}: {name} must be a finite one-dimensional vector")


def _key_columns(keys: Sequence[SourceKey]) -> tuple[list[str], list[str], list[str]]:
    return [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]


def _copy_values(row: KnowledgeRow, term_elements: dict[str, bytes]) -> tuple[Any, ...]:
    return (
        row.tenant_id,
        row.chunk_type,
        row.source_id,
        row.chunk_index,
        row.document_id,
        row.total_chunks,
        row.is_parent,
        row.parent_chunk_index,
        row.section_title,
        row.full_text,
        row.tldr,
        row.word_count,
        binary_text_array(row.search_terms, term_elements),
        row.content_hash,
        Jsonb(row.metadata),
        row.embedding_model,
        None if row.full_embedding is None else binary_halfvec(row.full_embedding),
        None if row.tldr_embedding is None else binary_halfvec(row.tldr_embedding),
        None if row.latent_terms is None else binary_sparsevec(row.latent_terms),
    )


_TEXT_OID = 25
_INT8_OID = 20
_INT4_OID = 23
_ARRAY_HEADER = struct.Struct("!iiIii")  # dimensions, has-nulls flag, element type, length, lower bound
_EMPTY_TEXT_ARRAY = struct.pack("!iiI", 0, 0, _TEXT_OID)
_FIELD_LENGTH = struct.Struct("!i")
_HALFVEC_HEADER = struct.Struct(">HH")  # dimensions, unused
_SPARSEVEC_HEADER = struct.Struct(">iii")  # dimensions, non-zero elements, unused


def binary_text_array(values: Sequence[str], elements: dict[str, bytes]) -> bytes:
    """`values` as a one-dimensional text[] in PostgreSQL's binary format (no NULL elements).
    `elements` keeps each value's encoded element (length, UTF-8 bytes) for the next calls: chunks
    of one write share most of their terms."""
    if not values:
        return _EMPTY_TEXT_ARRAY
    parts = [_ARRAY_HEADER.pack(1, 0, _TEXT_OID, len(values), 1)]
    for value in values:
        element = elements.get(value)
        if element is None:
            encoded = value.encode("utf-8")
            element = elements[value] = _FIELD_LENGTH.pack(len(encoded)) + encoded
        parts.append(element)
    return b"".join(parts)


def binary_halfvec(vector: np.ndarray) -> bytes:
    """`vector` as a pgvector halfvec in its binary format (big-endian IEEE half floats)."""
    values = np.asarray(vector, dtype=">f2")
    return _HALFVEC_HEADER.pack(len(values), 0) + values.tobytes()


def binary_sparsevec(vector: SparseVector) -> bytes:
    """`vector` as a pgvector sparsevec in its binary format (dimensions, count, 0, then the
    indices and the float4 values, big-endian)."""
    return (_SPARSEVEC_HEADER.pack(vector.dimension, len(vector.indices), 0)
            + np.asarray(vector.indices, dtype=">i4").tobytes() + np.asarray(vector.values, dtype=">f4").tobytes())


def _row_from(values: Sequence[Any]) -> KnowledgeRow:
    named = dict(zip(_COLUMNS, values, strict=True))
    for name in ("full_embedding", "tldr_embedding"):
        if named[name] is not None:
            named[name] = _to_array(named[name])
    if named["latent_terms"] is not None:
        named["latent_terms"] = _to_sparse(named["latent_terms"])
    return KnowledgeRow(**named)


def _to_sparse(vector: PgSparseVector) -> SparseVector:
    return SparseVector(np.asarray(vector.indices(), dtype=np.int32), np.asarray(vector.values(), dtype=np.float32),
                        vector.dimensions())


def _to_array(vector: HalfVector) -> np.ndarray:
    return vector.to_numpy().astype(np.float32)
