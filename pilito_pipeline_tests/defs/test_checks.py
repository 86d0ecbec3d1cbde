"""The asset checks fail when the knowledge table drifts (a check that cannot fail is no check)."""

from pilito_pipeline.defs.checks import no_orphan_chunks, processed_pages_have_chunks
from pilito_pipeline.defs.resources import DatabaseResource
from pilito_pipeline.store.db import connect
from pilito_pipeline.store.websites import register_website


def test_orphan_chunks_and_empty_processed_pages_fail_their_checks(database_url: str) -> None:
    database = DatabaseResource(database_url=database_url)
    assert no_orphan_chunks(database=database).passed
    assert processed_pages_have_chunks(database=database).passed
    with connect(database_url) as conn:
        website = register_website(conn, "acme", "http://127.0.0.1:1/")
        conn.execute(
            "INSERT INTO tenant_knowledge (tenant_id, chunk_type, source_id, chunk_index, total_chunks, full_text,"
            " content_hash) VALUES ('acme', 'website', 'p999', 0, 1, 'orphan', 'h')"
        )
        conn.execute(
            "INSERT INTO pages (tenant_id, website_id, url, status, content_hash, processed_hash)"
            " VALUES ('acme', %s, 'http://127.0.0.1:1/empty', 'fetched', 'h1', 'h1')",
            (website.id,),
        )
        conn.commit()
    orphan = no_orphan_chunks(database=database)
    assert not orphan.passed and orphan.metadata["count"].value == 1
    assert not processed_pages_have_chunks(database=database).passed
