"""The bundled demo site ingested the way the pipeline does it (extract -> chunk -> embed -> upsert),
without crawling: used by the evaluation test and the retrieval benchmark."""

from __future__ import annotations

import psycopg

from pilito_pipeline.demo import SITE_DIR
from pilito_pipeline.embed import EmbeddingProvider, embed_rows
from pilito_pipeline.ingest import knowledge_rows
from pilito_pipeline.store.knowledge import KnowledgeRow, upsert_sources
from pilito_pipeline.text import ExtractionError, chunk_document, extract_document

DEMO_BASE_URL = "http://demo.local"


def demo_rows(tenant_id: str, base_url: str = DEMO_BASE_URL) -> list[list[KnowledgeRow]]:
    """Rows (without embeddings) of every demo page with main text, one list per page; /admin/ is
    left out as robots.txt asks."""
    pages = []
    for number, path in enumerate(sorted(SITE_DIR.rglob("*.html")), start=1):
        relative = path.relative_to(SITE_DIR).as_posix()
        if relative.startswith("admin/"):
            continue
        url = f"{base_url}/{relative}"
        try:
            document = extract_document(path.read_text(encoding="utf-8"), url)
        except ExtractionError:
            continue  # the image-only gallery
        pages.append(knowledge_rows(tenant_id, "website", f"p{number}", url, chunk_document(document)))
    return pages


def ingest_demo_site(conn: psycopg.Connection, provider: EmbeddingProvider, tenant_id: str) -> int:
    """Store the demo site for `tenant_id`; returns the number of rows written."""
    pages = demo_rows(tenant_id)
    rows = [row for page in pages for row in page]
    embed_rows(rows, provider)
    with conn.transaction():
        upsert_sources(conn, {page[0].source_key: page for page in pages})
    return len(rows)
