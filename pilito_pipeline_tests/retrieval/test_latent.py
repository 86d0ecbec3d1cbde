"""The latent-term arm: e5's sparse head over pages written the way the pipeline writes them
(chunk -> embed_rows -> upsert_sources), searched per tenant; with the real e5 model and embedded
PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import psycopg
import pytest

from pilito_pipeline.embed import embed_rows
from pilito_pipeline.embed.e5 import E5Provider
from pilito_pipeline.sparse_vector import SparseVector
from pilito_pipeline.ingest.sources import knowledge_rows
from pilito_pipeline.retrieval import FeatureFlags, RetrievalConfig, Retriever
from pilito_pipeline.retrieval.latent import latent_search
from pilito_pipeline.store.db import connect
from pilito_pipeline.store.knowledge import upsert_sources
from pilito_pipeline.text import chunk_document, extract_document

pytestmark = pytest.mark.slow

PAGES = {
    "wifi": ("شبکهٔ بی‌سیم", "برای تغییر گذرواژهٔ شبکهٔ بی‌سیم، به تنظیمات شبکه بروید، شبکه را برگزینید و"
             " گذرواژهٔ تازه را وارد کنید. پس از ذخیره، دستگاه‌ها باید دوباره وصل شوند."),
    "print": ("چاپ", "برای چاپ یک سند، پرونده را باز کنید و از منوی پرونده گزینهٔ چاپ را بزنید. چاپگر"
              " باید روشن و به رایانه وصل باشد."),
    "backup": ("پشتیبان‌گیری", "از پرونده‌های مهم خود به‌طور منظم نسخهٔ پشتیبان بگیرید و آن را روی"
               " دیسک دیگری نگه دارید تا اگر دیسک خراب شد چیزی از دست نرود."),
    "display": ("نمایشگر", "روشنایی نمایشگر را از تنظیمات نمایش تغییر دهید. وضوح صفحه را نیز همان‌جا"
                " می‌توانید برگزینید."),
}
QUESTION = "پسورد وای‌فای رو چطوری عوض کنم"  # spoken, loanwords: BM25 shares no word with the page


@pytest.fixture(scope="module")
def e5() -> E5Provider:
    return E5Provider()


def write_site(conn: psycopg.Connection, provider: E5Provider, tenant: str, pages: Sequence[str] = tuple(PAGES)) -> None:
    """The pages through the pipeline's own path: extract, chunk, embed (dense + latent terms), upsert."""
    rows = {}
    for name in pages:
        title, text = PAGES[name]
        url = f"http://{tenant}.test/{name}.html"
        document = extract_document(f"<html lang='fa'><body><main><h1>{title}</h1><p>{text}</p></main></body></html>", url)
        rows[(tenant, "website", name)] = knowledge_rows(tenant, "website", name, url, chunk_document(document))
    embed_rows([row for page in rows.values() for row in page], provider)
    upsert_sources(conn, rows)


def top_page(result) -> str:  # noqa: ANN001 - a RetrievalResult
    return result.ranking[0].source_id


def test_an_informal_question_reaches_its_formal_page_by_latent_terms_alone(database_url: str, e5: E5Provider) -> None:
    with connect(database_url) as conn:
        write_site(conn, e5, "shop")
        stored = conn.execute("SELECT count(*) AS n FROM tenant_knowledge WHERE tenant_id = 'shop' AND NOT is_parent"
                              " AND latent_terms IS NOT NULL").fetchone()["n"]
        assert stored >= len(PAGES)
    config = replace(RetrievalConfig(), arms="latent")
    with Retriever(database_url, embedder=e5, flags=FeatureFlags(""), config=config) as retriever:
        result = retriever.retrieve_context(QUESTION, "shop")
    assert result.retrieval_method == "latent_only" and not result.degradations
    assert top_page(result) == "wifi"
    assert 0 < result.ranking[0].scores["latent"] <= 1  # cosines of L2-normalised latent terms
    with Retriever(database_url, embedder=e5, flags=FeatureFlags(""), config=RetrievalConfig()) as retriever:
        hybrid = retriever.retrieve_context(QUESTION, "shop")
    assert hybrid.retrieval_method == "hybrid" and top_page(hybrid) == "wifi"
    assert {"dense", "latent"} <= set(hybrid.ranking[0].scores)


def test_latent_search_stays_within_the_tenant_and_the_model(database_url: str, e5: E5Provider) -> None:
    with connect(database_url) as conn:
        write_site(conn, e5, "shop", ["print", "display"])
        write_site(conn, e5, "rival", ["wifi"])  # the right page, but another tenant's
        conn.execute("UPDATE tenant_knowledge SET embedding_model = 'older-model' WHERE source_id = 'display'")
        [question] = e5.query_latent_terms([QUESTION])
        found = latent_search(conn, "shop", ["website"], question, 10, model=e5.model_name)
        ids = [chunk_id for chunk_id, _ in found]
        sources = {r["source_id"] for r in conn.execute("SELECT source_id FROM tenant_knowledge WHERE id = ANY(%s)",
                                                        (ids,))}
        assert sources == {"print"}  # not the rival's page, not the other model's rows
        assert latent_search(conn, "shop", ["website"], SparseVector.of([], [], 16384), 10, model=e5.model_name) == []


class LatentTermsFail(E5Provider):
    def query_latent_terms(self, texts: Sequence[str]) -> list[SparseVector]:
        raise RuntimeError("sparse head unavailable")


def test_a_failing_sparse_head_degrades_to_the_other_arms(database_url: str, e5: E5Provider) -> None:
    with connect(database_url) as conn:
        write_site(conn, e5, "shop")
    with Retriever(database_url, embedder=LatentTermsFail(), flags=FeatureFlags(""), config=RetrievalConfig()) as retriever:
        result = retriever.retrieve_context(QUESTION, "shop")
    assert [d.stage for d in result.degradations] == ["latent"]
    assert result.retrieval_method == "hybrid" and top_page(result) == "wifi"  # dense and BM25 carry it
    assert all("latent" not in chunk.scores for chunk in result.ranking)


def test_without_a_sparse_head_the_arm_stays_out(database_url: str, embedder) -> None:  # noqa: ANN001 - MiniLM
    with Retriever(database_url, embedder=embedder, flags=FeatureFlags(""), config=RetrievalConfig()) as retriever:
        result = retriever.retrieve_context("How do I print?", "nobody")
    assert not result.degradations and "latent" not in result.stages_ms
