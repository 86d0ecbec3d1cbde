"""One tenant-id rule: the Python validator every entry point uses, and the same rule as a CHECK
constraint on every table that holds a tenant id."""

from __future__ import annotations

import psycopg
import pytest

from pilito_pipeline.embed.openai_provider import OpenAIProvider
from pilito_pipeline.ingest.sources import ingest_faq
from pilito_pipeline.store.ann_indexes import ann_index_names
from pilito_pipeline.store.db import connect
from pilito_pipeline.store.tenants import InvalidTenantId, check_tenant_id
from pilito_pipeline.store.websites import register_website

VALID = ["a", "acme", "A-b_c.1", "x" * 64, "..", "0"]
INVALID = ["", "acme\n", "\nacme", "ac me", "acme/1", "x" * 65, "شرکت", "caf\u00e9", "\u0661\u0662", "a\u200cb", "ａcme"]


@pytest.mark.parametrize("tenant_id", VALID)
def test_valid_tenant_ids_pass_unchanged(tenant_id: str) -> None:
    assert check_tenant_id(tenant_id) == tenant_id


@pytest.mark.parametrize("tenant_id", [*INVALID, None, 42, b"acme"])
def test_invalid_tenant_ids_are_refused(tenant_id: object) -> None:
    with pytest.raises(InvalidTenantId):
        check_tenant_id(tenant_id)


def test_every_entry_point_refuses_a_trailing_newline(database_url: str) -> None:
    """Before: `register_website` accepted 'acme\\n' (re.match with `$`), `ann_index_names` did not."""
    with connect(database_url) as conn:
        with pytest.raises(InvalidTenantId):
            register_website(conn, "acme\n", "https://example.com/")
        with pytest.raises(InvalidTenantId):
            unreachable = OpenAIProvider("m", 8, api_key="k", base_url="http://127.0.0.1:9/v1", max_retries=0)
            ingest_faq(conn, unreachable, "acme\n", "Q?", "A.")  # refused before any request
    with pytest.raises(InvalidTenantId):
        ann_index_names("acme\n")


def tenant_tables(conn: psycopg.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT table_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND column_name = 'tenant_id' ORDER BY table_name"
    ).fetchall()
    return [r["table_name"] for r in rows]


def test_every_table_with_a_tenant_id_checks_it_with_the_same_rule(database_url: str) -> None:
    with connect(database_url) as conn:
        tables = tenant_tables(conn)
        assert {"websites", "pages", "tenant_knowledge", "bm25_postings", "bm25_tenant_stats", "tenant_ann_indexes"} <= set(tables)
        for table in tables:
            checks = conn.execute(
                "SELECT pg_get_constraintdef(oid) AS def FROM pg_constraint"
                " WHERE conrelid = %s::regclass AND contype = 'c'",
                (table,),
            ).fetchall()
            assert any("tenant_id ~ '^[A-Za-z0-9_.-]{1,64}$'" in c["def"] for c in checks), (table, checks)
        # The database agrees with the Python rule on every sample (the regex engines differ).
        for tenant_id in [*VALID, *INVALID]:
            with conn.transaction(force_rollback=True):
                try:
                    conn.execute("INSERT INTO bm25_tenant_stats (tenant_id) VALUES (%s)", (tenant_id,))
                    accepted = True
                except psycopg.errors.CheckViolation:
                    accepted = False
            assert accepted == (tenant_id in VALID), repr(tenant_id)


@pytest.mark.parametrize(
    ("table", "columns"),
    [
        ("pages", "(tenant_id, website_id, url) VALUES (%s, 1, 'x')"),
        ("tenant_knowledge", "(tenant_id, chunk_type, source_id, chunk_index, total_chunks, full_text, content_hash)"
                             " VALUES (%s, 'faq', 's', 0, 1, 't', 'h')"),
        ("bm25_postings", "(tenant_id, term, chunk_type, segment, chunk_ids, tfs, chunk_lengths)"
                          " VALUES (%s, 't', 'faq', 1, '{1}', '{1}', '{1}')"),
    ],
)
def test_the_database_refuses_a_trailing_newline_in_any_table(database_url: str, table: str, columns: str) -> None:
    with connect(database_url) as conn:
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(f"INSERT INTO {table} {columns}", ("acme\n",))
