"""Bring a tenant's English vocabulary vectors up to date (`store.term_vectors`): embed, alone and
as queries, the vocabulary terms that have none yet. Run by the index maintenance asset."""

from __future__ import annotations

import psycopg

from pilito_pipeline.embed import EmbeddingProvider
from pilito_pipeline.store.term_vectors import mark_refreshed, store_term_vectors, terms_without_vectors

VOCABULARY_LIMIT = 5000
"""Most frequent terms kept per tenant: beyond them a term is in few chunks and BM25 finds it by name."""


def refresh_term_vectors(conn: psycopg.Connection, tenant_id: str, embedder: EmbeddingProvider,
                         *, batch_size: int = 256) -> int:
    """Embed the tenant's vocabulary terms without vectors; returns how many were embedded.

    No transaction is open while the model runs, so `conn` must be idle (autocommit, or its last
    transaction ended). The refresh is dated by the start of the read, so English chunks written
    meanwhile are read by the next one."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise ValueError("refresh_term_vectors needs an idle connection: its transactions must be its own")
    model = embedder.model_name
    with conn.transaction():
        as_of = conn.execute("SELECT now() AS t").fetchone()["t"]
        terms = terms_without_vectors(conn, tenant_id, model, limit=VOCABULARY_LIMIT)
    vectors = [embedder.embed_queries(terms[start:start + batch_size]) for start in range(0, len(terms), batch_size)]
    with conn.transaction():
        for number, batch in enumerate(vectors):
            store_term_vectors(conn, tenant_id, model, terms[number * batch_size:(number + 1) * batch_size], batch)
        mark_refreshed(conn, tenant_id, model, as_of)
    return len(terms)
