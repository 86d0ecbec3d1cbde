"""Sites ingested the way the pipeline does it (extract -> chunk -> embed -> upsert), without
crawling: the bundled demo site and the Persian handbook site (fixtures/handbook_fa), used by the
evaluation tests, `make eval-fa` and the retrieval benchmark."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import psycopg

from pilito_pipeline.app.demo import SITE_DIR
from pilito_pipeline.embed import EmbeddingProvider, embed_rows
from pilito_pipeline.ingest.sources import knowledge_rows
from pilito_pipeline.store.knowledge import KnowledgeRow, upsert_sources
from pilito_pipeline.text import ExtractionError, chunk_document, extract_document

DEMO_BASE_URL = "http://demo.local"
HANDBOOK_SITE_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "handbook_fa" / "site"
HANDBOOK_BASE_URL = "http://handbook.local"
GIMP_SITE_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "gimp_en" / "site"
GIMP_BASE_URL = "http://gimp.local"


def site_rows(site_dir: Path, tenant_id: str, base_url: str, *, skip: Sequence[str] = (),
              only: Sequence[str] | None = None) -> list[list[KnowledgeRow]]:
    """Rows (without embeddings) of every page of `site_dir` with main text, one list per page;
    paths starting with a `skip` prefix are left out, and with `only` every other page too."""
    pages = []
    for number, path in enumerate(sorted(site_dir.rglob("*.html")), start=1):
        relative = path.relative_to(site_dir).as_posix()
        if relative.startswith(tuple(skip)) or (only is not None and relative not in only):
            continue
        url = f"{base_url}/{relative}"
        try:
            document = extract_document(path.read_text(encoding="utf-8"), url)
        except ExtractionError:
            continue  # the demo's image-only gallery
        pages.append(knowledge_rows(tenant_id, "website", f"p{number}", url, chunk_document(document)))
    return pages


def demo_rows(tenant_id: str, base_url: str = DEMO_BASE_URL) -> list[list[KnowledgeRow]]:
    """The demo site; /admin/ is left out as robots.txt asks."""
    return site_rows(SITE_DIR, tenant_id, base_url, skip=("admin/",))


def handbook_rows(tenant_id: str, only: Sequence[str] | None = None) -> list[list[KnowledgeRow]]:
    """The Persian handbook site (the index page included: it is part of the site)."""
    return site_rows(HANDBOOK_SITE_DIR, tenant_id, HANDBOOK_BASE_URL, only=only)


def gimp_rows(tenant_id: str) -> list[list[KnowledgeRow]]:
    """GIMP's English help, 272 pages of three hub-heavy sections (fixtures/gimp_en)."""
    return site_rows(GIMP_SITE_DIR, tenant_id, GIMP_BASE_URL)


def mixed_rows(tenant_id: str) -> list[list[KnowledgeRow]]:
    """One site of both: the Persian handbook and GIMP's English help (the cross-lingual set)."""
    handbook = handbook_rows(tenant_id)
    gimp = site_rows(GIMP_SITE_DIR, tenant_id, GIMP_BASE_URL)
    for number, page in enumerate(gimp, start=len(handbook) + 1):
        for row in page:
            row.source_id = f"g{number}"
    return handbook + gimp


def store_pages(conn: psycopg.Connection, pages: list[list[KnowledgeRow]], provider: EmbeddingProvider,
                *, embed_tldr: bool = True) -> int:
    """Embed and store pages' rows; returns the number of rows written."""
    rows = [row for page in pages for row in page]
    embed_rows(rows, provider, tldr=embed_tldr)
    with conn.transaction():
        upsert_sources(conn, {page[0].source_key: page for page in pages})
    return len(rows)


def ingest_demo_site(conn: psycopg.Connection, provider: EmbeddingProvider, tenant_id: str) -> int:
    """Store the demo site for `tenant_id`; returns the number of rows written."""
    return store_pages(conn, demo_rows(tenant_id), provider)
