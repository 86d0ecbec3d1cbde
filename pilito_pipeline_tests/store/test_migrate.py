import psycopg
import pytest

from pilito_pipeline.store.db import connect
from pilito_pipeline.store.migrate import SchemaMismatch, migrate, migration_files


def test_migrations_are_idempotent_and_recorded(database_url: str) -> None:
    assert migrate(database_url) == []  # the template already has them all
    with connect(database_url) as conn:
        versions = [r["version"] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    assert versions == [v for v, _ in migration_files()]


def test_wrong_embedding_dimension_is_a_clear_error(database_url: str) -> None:
    with pytest.raises(SchemaMismatch, match="384-dimensional"):
        migrate(database_url, embedding_dimension=768)


def test_chunk_identity_allows_many_chunks_per_page_but_no_duplicates(database_url: str) -> None:
    row = "INSERT INTO tenant_knowledge (tenant_id, chunk_type, source_id, chunk_index, total_chunks, full_text, content_hash) VALUES ('t1', 'website', 'p1', %s, 2, 'x', 'h')"
    with connect(database_url) as conn:
        conn.execute(row, (0,))
        conn.execute(row, (1,))
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(row, (1,))
