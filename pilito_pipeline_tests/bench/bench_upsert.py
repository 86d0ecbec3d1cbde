"""Benchmark of knowledge writes: per-row INSERT vs executemany vs upsert_sources, re-runs,
halfvec vs vector, HNSW recall@20, and local embedding throughput.

    python -m pilito_pipeline_tests.bench.bench_upsert [--chunks 50000] [--per-row 2000] [--indexed-chunks 10000]
                                                       [--writes-only]

Goals (issue 12): a first write of 50k chunks for small tenants at least 10x one INSERT per row and
at least executemany, all three keeping BM25 exact: the baselines through the insert trigger of
migration 0010 (bm25_add aggregates their terms in SQL), upsert_sources by building the postings of
the chunks it inserts itself (migration 0012).

Writes run in the production layout (all migrations: no shared HNSW index; a tenant gets its own
partial HNSW indexes from `DEFAULT_MIN_CHUNKS` chunks, store/ann_indexes.py), twice:
small tenants (20 tenants, none indexed: writes pay no HNSW maintenance) and one big tenant that
already has its own partial indexes (every row it writes is inserted into its HNSW graphs).

Starts its own embedded PostgreSQL in a temporary folder unless DATABASE_URL is set (then it
creates and drops scratch databases there). Every ratio is against a baseline measured in the
same run. Vectors for the write benchmark are synthetic but clustered (unit vectors around 1,000
topic centres, like real chunk embeddings); texts draw 120 words from a Zipf-distributed vocabulary
of 5,000 words (a page's 10 chunks share about as many terms as real pages do, which is what the
per-source BM25 postings gain from); the recall measurement uses real MiniLM embeddings.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("LC_ALL", "C.UTF-8")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import psycopg  # noqa: E402
from pgvector import HalfVector, Vector  # noqa: E402
from psycopg.types.json import Jsonb  # noqa: E402

from pilito_pipeline.store.ann_indexes import ensure_tenant_ann_index  # noqa: E402
from pilito_pipeline.store.db import connect  # noqa: E402
from pilito_pipeline.store.knowledge import KnowledgeRow, SourceKey, text_digest, upsert_sources  # noqa: E402
from pilito_pipeline.store.migrate import migrate  # noqa: E402

DIMENSION = 384
CHUNKS_PER_SOURCE = 10
COLUMNS = (
    "tenant_id, chunk_type, source_id, chunk_index, document_id, total_chunks, is_parent, parent_chunk_index,"
    " section_title, full_text, tldr, word_count, search_terms, content_hash, metadata, embedding_model,"
    " full_embedding, tldr_embedding"
)
INSERT_ONE = (
    f"INSERT INTO tenant_knowledge ({COLUMNS}) VALUES ({', '.join(['%s'] * 18)})"
    " ON CONFLICT ON CONSTRAINT tenant_knowledge_chunk_identity DO NOTHING"
)
WORDS = (
    "course class teacher english persian exam price schedule online register student level book grammar"
    " speaking listening writing reading weekend evening children adults certificate branch tehran"
).split()
VOCABULARY_SIZE = 5_000
WORDS_PER_CHUNK = 120


def zipf_words(rng: np.random.Generator, count: int) -> list[str]:
    """`count` words of a Zipf-distributed vocabulary (the first ones are the common WORDS)."""
    weights = 1.0 / np.arange(1, VOCABULARY_SIZE + 1)
    ranks = rng.choice(VOCABULARY_SIZE, size=count, p=weights / weights.sum())
    return [WORDS[r] if r < len(WORDS) else f"w{r}" for r in ranks]


# ---------------------------------------------------------------------------------------------- data

class ClusteredVectors:
    """Unit vectors scattered around topic centres, the shape of real chunk embeddings."""

    def __init__(self, seed: int = 7, topics: int = 1000) -> None:
        self.rng = np.random.default_rng(seed)
        self.centres = self.rng.standard_normal((topics, DIMENSION)).astype(np.float32)

    def sample(self, count: int) -> np.ndarray:
        picks = self.centres[self.rng.integers(len(self.centres), size=count)]
        vectors = picks + 0.8 * self.rng.standard_normal((count, DIMENSION)).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def make_knowledge(chunks: int, vectors: ClusteredVectors, tenants: int = 20) -> dict[SourceKey, list[KnowledgeRow]]:
    rng = np.random.default_rng(3)
    full, tldr = vectors.sample(chunks), vectors.sample(chunks)
    words = zipf_words(rng, chunks * WORDS_PER_CHUNK)
    data: dict[SourceKey, list[KnowledgeRow]] = {}
    for n in range(chunks):
        source, index = divmod(n, CHUNKS_PER_SOURCE)
        key = (f"tenant{source % tenants}", "website", f"p{source}")
        terms = words[n * WORDS_PER_CHUNK:(n + 1) * WORDS_PER_CHUNK]
        text = " ".join(terms) + f" #{n}"
        data.setdefault(key, []).append(
            KnowledgeRow(
                tenant_id=key[0], chunk_type="website", source_id=key[2], document_id=f"https://site/{source}",
                chunk_index=index, total_chunks=CHUNKS_PER_SOURCE, is_parent=False, parent_chunk_index=None,
                section_title="section", full_text=text, tldr=text[:200], word_count=len(terms) + 1,
                search_terms=[*terms, f"#{n}"], content_hash=text_digest(text), metadata={"url": f"https://site/{source}"},
                embedding_model="bench-model", full_embedding=full[n], tldr_embedding=tldr[n],
            )
        )
    return data


def row_values(row: KnowledgeRow) -> tuple:
    return (
        row.tenant_id, row.chunk_type, row.source_id, row.chunk_index, row.document_id, row.total_chunks,
        row.is_parent, row.parent_chunk_index, row.section_title, row.full_text, row.tldr, row.word_count,
        row.search_terms, row.content_hash, Jsonb(row.metadata), row.embedding_model,
        HalfVector(row.full_embedding), HalfVector(row.tldr_embedding),
    )


def all_rows(data: dict[SourceKey, list[KnowledgeRow]]) -> list[KnowledgeRow]:
    return [row for rows in data.values() for row in rows]


# ------------------------------------------------------------------------------------------ database

@contextmanager
def server_root() -> Iterator[str]:
    external = os.environ.get("DATABASE_URL")
    if external:
        yield external
        return
    from pilito_pipeline.store.server import embedded_server_uri, stop_embedded_server

    with tempfile.TemporaryDirectory(prefix="bench-upsert-") as folder:
        root = embedded_server_uri(Path(folder), database="postgres")
        try:
            yield root
        finally:
            stop_embedded_server(Path(folder))


@contextmanager
def scratch_database(root: str) -> Iterator[str]:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(root, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    head, sep, query = root.partition("?")
    url = f"{head.rsplit('/', 1)[0]}/{name}{sep}{query}"
    try:
        migrate(url, embedding_dimension=DIMENSION)
        yield url
    finally:
        with psycopg.connect(root, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def timed(action: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def wal_bytes_and_table_state(conn: psycopg.Connection) -> tuple[int, str, int]:
    row = conn.execute(
        "SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn AS wal,"
        " (SELECT md5(string_agg(xmin::text, ',' ORDER BY id)) FROM tenant_knowledge) AS xmins,"
        " (SELECT coalesce(sum(pg_relation_size(i.indexrelid)), 0) FROM pg_index i"
        "   JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam"
        "  WHERE i.indrelid = 'tenant_knowledge'::regclass AND a.amname = 'hnsw') AS hnsw"
    ).fetchone()
    return int(row["wal"]), row["xmins"], int(row["hnsw"])


# ------------------------------------------------------------------------------------------ writing

def insert_per_row(url: str, rows: Sequence[KnowledgeRow]) -> None:
    """(a) the seeds' 'before': one INSERT per row, each its own transaction."""
    with connect(url, autocommit=True) as conn:
        for row in rows:
            conn.execute(INSERT_ONE, row_values(row))


def insert_executemany(url: str, rows: Sequence[KnowledgeRow]) -> None:
    """(b) the seeds' 'after' (bulk_create ignore_conflicts): executemany in one transaction."""
    with connect(url) as conn, conn.cursor() as cur:
        cur.executemany(INSERT_ONE, [row_values(row) for row in rows])


def write_benchmark(root: str, chunks: int, per_row: int, indexed_chunks: int) -> None:
    print(f"\n== Writes: {DIMENSION}-d, both embedding columns, production layout ==")
    scenarios = (
        (f"{chunks:,} chunks of 20 small tenants, no HNSW index (below the per-tenant index threshold)",
         chunks, 20, False),
        (f"{indexed_chunks:,} chunks of 1 big tenant with its own partial HNSW indexes (full + TL;DR)",
         indexed_chunks, 1, True),
    )
    for label, count, tenants, indexed in scenarios:
        if count < 1:
            continue
        print(f"-- {label}")
        data = make_knowledge(count, ClusteredVectors(), tenants=tenants)
        rows = all_rows(data)
        subset = rows[: per_row if indexed else min(count, per_row * 5)]
        with scratch_database(root) as url:
            if indexed:
                build_tenant_index(url, rows[0].tenant_id)
            seconds, _ = timed(lambda s=subset: insert_per_row(url, s))
            rate_a = len(subset) / seconds
            print(f"(a) one INSERT per row     {rate_a:>9,.0f} rows/s  (first {len(subset):,} rows, extrapolated)")
            truncate(url, indexed)
            seconds, _ = timed(lambda: insert_executemany(url, rows))
            rate_b = len(rows) / seconds
            print(f"(b) executemany, one txn   {rate_b:>9,.0f} rows/s  ({seconds:.1f} s)")
            truncate(url, indexed)
            with connect(url) as conn:
                seconds, stats = timed(lambda d=data: upsert_sources(conn, d))
            rate_c = len(rows) / seconds
            print(f"(c) upsert_sources         {rate_c:>9,.0f} rows/s  ({seconds:.1f} s, {stats})")
            postings = postings_rows(url)
            print(f"    BM25 postings: {postings:,} rows for {len(rows):,} chunks"
                  f" ({per_chunk_postings(url):,} (term, chunk) pairs)")
            print(f"    (c)/(a) = {rate_c / rate_a:.1f}x   (c)/(b) = {rate_c / rate_b:.2f}x")
            if not indexed:
                print(f"    goal (c) >= 10x (a): {'MET' if rate_c >= 10 * rate_a else 'NOT MET'};"
                      f" goal (c) >= (b): {'MET' if rate_c >= rate_b else 'NOT MET'}")
            rewrite_benchmark(url, data, first_write_seconds=seconds)


def postings_rows(url: str) -> int:
    with connect(url) as conn:
        return int(conn.execute("SELECT count(*) AS n FROM bm25_postings").fetchone()["n"])


def per_chunk_postings(url: str) -> int:
    with connect(url) as conn:
        return int(conn.execute("SELECT sum(cardinality(chunk_ids)) AS n FROM bm25_postings").fetchone()["n"] or 0)


def build_tenant_index(url: str, tenant: str) -> None:
    """Give `tenant` its partial HNSW indexes before the writes (threshold 1: one seed row)."""
    seed = make_knowledge(1, ClusteredVectors(seed=99), tenants=1)
    with connect(url) as conn:
        upsert_sources(conn, {(tenant, "website", "seed"): [
            KnowledgeRow(**{**vars(row), "tenant_id": tenant, "source_id": "seed"}) for row in all_rows(seed)]})
    assert ensure_tenant_ann_index(url, tenant, min_chunks=1) is not None


def truncate(url: str, indexed: bool) -> None:
    """Empty the table between methods; the tenant's partial indexes stay (empty) and registered."""
    with connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE tenant_knowledge, bm25_postings, bm25_tenant_stats")
        if indexed:
            state = conn.execute("SELECT count(*) AS n FROM tenant_ann_indexes").fetchone()
            assert state["n"] == 1


def rewrite_benchmark(url: str, data: dict[SourceKey, list[KnowledgeRow]], first_write_seconds: float) -> None:
    count = sum(len(r) for r in data.values())
    with connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE tenant_knowledge")  # what autovacuum does after a bulk load
        wal0, xmins0, hnsw0 = wal_bytes_and_table_state(conn)
    with connect(url) as conn:
        seconds, stats = timed(lambda: upsert_sources(conn, data))
    with connect(url, autocommit=True) as conn:
        wal1, xmins1, hnsw1 = wal_bytes_and_table_state(conn)
    print(
        f"(d) same {count:,} again       {count / seconds:>9,.0f} rows/s  ({seconds:.2f} s, {stats});"
        f" {first_write_seconds / seconds:.0f}x faster than (c); rows rewritten: {'none' if xmins0 == xmins1 else 'SOME'};"
        f" HNSW bytes +{hnsw1 - hnsw0:,}; WAL {(wal1 - wal0) / 1024:,.0f} KiB"
    )
    rng = np.random.default_rng(11)
    vectors = ClusteredVectors(seed=12)
    changed = 0
    for rows in data.values():
        for row in rows:
            if rng.random() < 0.10:
                row.full_text += " (edited)"
                row.content_hash = text_digest(row.full_text)
                row.full_embedding = vectors.sample(1)[0]
                changed += 1
    with connect(url) as conn:
        seconds, stats = timed(lambda: upsert_sources(conn, data))
    share = changed / count
    print(
        f"(e) {share:.0%} changed ({changed:,})    {count / seconds:>9,.0f} rows/s  ({seconds:.1f} s, {stats});"
        f" {seconds / first_write_seconds:.1%} of (c)'s time for {share:.1%} of the rows"
    )


# ----------------------------------------------------------------------------- halfvec vs vector, recall

def generated_sentences(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    subjects = ["The English course", "Our weekend class", "The IELTS exam", "Private tutoring", "The kids program",
                "Online lessons", "The grammar workshop", "Summer camp", "The speaking club", "Teacher training"]
    verbs = ["starts", "costs", "is held", "is taught", "requires", "includes", "ends", "is cancelled", "moves", "opens"]
    tails = ["in Tehran", "every Friday", "for beginners", "with native teachers", "at the north branch",
             "before the exam", "for 12 weeks", "online via Zoom", "with a certificate", "in the evening"]
    persian = ["کلاس زبان", "ثبت‌نام", "شهریه", "آزمون آیلتس", "دوره تابستانی", "مدرس خصوصی", "کلاس آنلاین"]
    return [
        f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(tails)} {rng.choice(tails)}; "
        f"{rng.choice(persian)} {rng.choice(persian)} {rng.randint(1, 500)}"
        for _ in range(count)
    ]


def recall_benchmark(root: str, provider, corpus_size: int, queries: int) -> None:
    print(f"\n== HNSW recall@20 on MiniLM embeddings of {corpus_size:,} generated sentences, {queries} queries ==")
    corpus = provider.embed(generated_sentences(corpus_size, 1))
    probes = provider.embed(generated_sentences(queries, 2))
    exact32 = np.argsort(-(probes @ corpus.T), axis=1)[:, :20]
    tenants = np.arange(corpus_size) % 10
    with scratch_database(root) as url, connect(url, autocommit=True) as conn:
        storage_and_speed(conn, corpus)
        for kind in ("halfvec", "vector"):
            wrap = HalfVector if kind == "halfvec" else Vector
            conn.execute(f"CREATE TABLE r_{kind} (id int PRIMARY KEY, tenant int, e {kind}({DIMENSION}))")
            with conn.cursor().copy(f"COPY r_{kind} FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["int4", "int4", kind])
                for i, vector in enumerate(corpus):
                    copy.write_row((i, int(tenants[i]), wrap(vector)))
        for m, ef_construction in ((16, 64), (16, 128), (24, 64)):
            for kind in ("halfvec",) if (m, ef_construction) != (16, 64) else ("halfvec", "vector"):
                conn.execute("DROP INDEX IF EXISTS r_idx")
                build, _ = timed(lambda: conn.execute(
                    f"CREATE INDEX r_idx ON r_{kind} USING hnsw (e {kind}_cosine_ops)"
                    f" WITH (m = {m}, ef_construction = {ef_construction})"))
                conn.execute(f"ANALYZE r_{kind}")
                for ef_search in (40, 100):
                    conn.execute(f"SET hnsw.ef_search = {ef_search}")
                    recall, ms = hnsw_recall(conn, kind, probes, exact32)
                    print(f"{kind:8} m={m:<3} ef_construction={ef_construction:<4} ef_search={ef_search:<4}"
                          f" recall@20 {recall:.3f}  ({ms:.2f} ms/query, build {build:.1f} s)")
                if (m, ef_construction, kind) == (16, 64, "halfvec"):
                    filtered_recall(conn, probes, corpus, tenants)
        conn.execute("RESET hnsw.ef_search")


def hnsw_recall(conn: psycopg.Connection, kind: str, probes: np.ndarray, exact: np.ndarray) -> tuple[float, float]:
    wrap = HalfVector if kind == "halfvec" else Vector
    hits, started = 0, time.perf_counter()
    for probe, truth in zip(probes, exact, strict=True):
        found = conn.execute(f"SELECT id FROM r_{kind} ORDER BY e <=> %s LIMIT 20", (wrap(probe),)).fetchall()
        hits += len({r["id"] for r in found} & set(truth.tolist()))
    return hits / exact.size, (time.perf_counter() - started) * 1000 / len(probes)


def filtered_recall(conn: psycopg.Connection, probes: np.ndarray, corpus: np.ndarray, tenants: np.ndarray) -> None:
    """Production queries filter by tenant; with 10 tenants the filter keeps a tenth of HNSW's candidates."""
    mine = np.flatnonzero(tenants == 3)
    exact = mine[np.argsort(-(probes @ corpus[mine].T), axis=1)[:, :20]]
    for iterative in ("off", "relaxed_order"):
        conn.execute(f"SET hnsw.iterative_scan = {iterative}")
        hits = returned = 0
        for probe, truth in zip(probes, exact, strict=True):
            found = conn.execute(
                "SELECT id FROM r_halfvec WHERE tenant = 3 ORDER BY e <=> %s LIMIT 20", (HalfVector(probe),)
            ).fetchall()
            returned += len(found)
            hits += len({r["id"] for r in found} & set(truth.tolist()))
        print(f"   tenant-filtered (1 of 10 tenants), ef_search=100, iterative_scan={iterative:<13}"
              f" recall@20 {hits / exact.size:.3f}, rows returned {returned / len(probes):.1f} of 20")
    conn.execute("RESET hnsw.iterative_scan")


def storage_and_speed(conn: psycopg.Connection, corpus: np.ndarray) -> None:
    """Same vectors as halfvec and vector: table + HNSW size, insert rate with the index present."""
    print(f"-- storage and insert speed, {len(corpus):,} rows, HNSW present, m=16 ef_construction=64")
    for kind, wrap in (("halfvec", HalfVector), ("vector", Vector)):
        conn.execute(f"CREATE TABLE s_{kind} (id int PRIMARY KEY, e {kind}({DIMENSION}))")
        conn.execute(f"CREATE INDEX s_{kind}_idx ON s_{kind} USING hnsw (e {kind}_cosine_ops)")
        def load() -> None:
            with conn.cursor().copy(f"COPY s_{kind} FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["int4", kind])
                for i, vector in enumerate(corpus):
                    copy.write_row((i, wrap(vector)))
        seconds, _ = timed(load)
        sizes = conn.execute(
            f"SELECT pg_table_size('s_{kind}') AS heap, pg_relation_size('s_{kind}_idx') AS hnsw"
        ).fetchone()
        print(f"{kind:8} insert {len(corpus) / seconds:>7,.0f} rows/s; heap {sizes['heap'] / 2**20:6.1f} MiB;"
              f" HNSW {sizes['hnsw'] / 2**20:6.1f} MiB")


# ---------------------------------------------------------------------------------------- embedding

def embedding_benchmark(provider) -> None:
    print("\n== Local embedding throughput (packaged all-MiniLM-L6-v2, CPU) ==")
    texts = [" ".join(random.Random(i).choices(WORDS, k=60)) for i in range(256)]
    for batch_size in (1, 32, 128):
        provider.batch_size = batch_size
        sample = texts[:32] if batch_size == 1 else texts
        provider.embed(sample[:batch_size])  # warm-up
        seconds, _ = timed(lambda: provider.embed(sample))
        print(f"batch {batch_size:>3}: {len(sample) / seconds:7.1f} texts/s  ({len(sample)} texts of 60 words)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=50_000)
    parser.add_argument("--per-row", type=int, default=2_000, help="rows for (a) with HNSW (x5 without)")
    parser.add_argument("--indexed-chunks", type=int, default=10_000,
                        help="chunks written for the tenant with its own HNSW indexes (0: skip; every row is"
                             " inserted into two HNSW graphs, ~100-400 rows/s whatever the method)")
    parser.add_argument("--recall-corpus", type=int, default=3_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--writes-only", action="store_true", help="skip the recall and embedding sections")
    args = parser.parse_args()
    from pilito_pipeline.embed import LocalProvider

    started = time.perf_counter()
    with server_root() as root:
        write_benchmark(root, args.chunks, args.per_row, args.indexed_chunks)
        if not args.writes_only:
            provider = LocalProvider("all-MiniLM-L6-v2", batch_size=128)
            recall_benchmark(root, provider, args.recall_corpus, args.queries)
            embedding_benchmark(provider)
    print(f"\nbenchmark took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
