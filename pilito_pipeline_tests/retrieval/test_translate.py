"""Persian question, English page: vocabulary vectors (store + upkeep), the translated arm, and
its maintenance asset and sensor; with the real e5 model and embedded PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg
import numpy as np
import psycopg
import pytest

from pilito_pipeline.defs.maintenance import TERM_VECTOR_RUN_TAGS, tenant_term_vectors, term_vector_sensor
from pilito_pipeline.defs.resources import DatabaseResource, EmbeddingResource
from pilito_pipeline.embed.e5 import E5Provider
from pilito_pipeline.ingest.term_vectors import refresh_term_vectors
from pilito_pipeline.retrieval import FeatureFlags, RetrievalConfig, Retriever
from pilito_pipeline.retrieval.fusion import evidence_fusion
from pilito_pipeline.retrieval.query import analyze_query
from pilito_pipeline.retrieval.translate import translate_query, translation_words
from pilito_pipeline.store.db import connect
from pilito_pipeline.store.term_vectors import (
    has_term_vectors, nearest_terms, store_term_vectors, tenants_needing_term_vectors,
    terms_without_vectors,
)
from pilito_pipeline_tests.retrieval.conftest import ChunkSpec, insert_chunks

LAYERS = [
    ("Layers", "To add a new layer to the image, choose Layer, New Layer. Each layer holds its own pixels."),
    ("Layer groups", "Add several layers to a layer group to move them together."),
]
CROP = [("Crop tool", "The crop tool removes the edges of an image: drag a rectangle and press Enter.")]
PRINTERS = [("چاپگر", "برای افزودن چاپگر به تنظیمات بروید و چاپگر تازه را برگزینید. چاپگر باید روشن باشد.")]


@pytest.fixture(scope="module")
def e5() -> E5Provider:
    return E5Provider()


def write_pages(conn: psycopg.Connection, e5: E5Provider, tenant: str,
                pages: dict[str, tuple[str, Sequence[tuple[str, str]]]]) -> None:
    """Pages as chunk rows of the e5 model: {url: (language, [(heading, text), ...])}."""
    specs = []
    for url, (language, chunks) in pages.items():
        for index, (heading, text) in enumerate(chunks):
            specs.append(ChunkSpec(tenant, text, section_title=heading, source_id=url, chunk_index=index, url=url,
                                   full_embedding=e5.embed([f"{heading}\n{text}"])[0],
                                   metadata={"language": language}))
    ids = insert_chunks(conn, specs)
    conn.execute("UPDATE tenant_knowledge SET embedding_model = %s WHERE id = ANY(%s)", (e5.model_name, ids))


def gimp_like_site(conn: psycopg.Connection, e5: E5Provider, tenant: str = "shop") -> None:
    write_pages(conn, e5, tenant, {
        "http://shop.test/layers.html": ("en", LAYERS),
        "http://shop.test/crop.html": ("en", CROP),
        "http://shop.test/printers.html": ("fa", PRINTERS),
    })


def test_vocabulary_is_english_terms_of_two_chunks_and_is_embedded_once(database_url: str, e5: E5Provider) -> None:
    with connect(database_url) as conn:
        gimp_like_site(conn, e5)
        conn.commit()
        vocabulary = terms_without_vectors(conn, "shop", e5.model_name)
        conn.commit()
        assert "layer" in vocabulary and "group" not in vocabulary  # "group" is in one chunk only
        assert not any("\u0600" <= ch <= "\u06ff" for term in vocabulary for ch in term)  # the Persian page's words
        assert refresh_term_vectors(conn, "shop", e5) == len(vocabulary)
        assert has_term_vectors(conn, "shop", e5.model_name)
        assert terms_without_vectors(conn, "shop", e5.model_name) == []
        conn.commit()
        assert refresh_term_vectors(conn, "shop", e5) == 0
        assert terms_without_vectors(conn, "shop", "another-model") == []  # no chunks of that model


def test_tenants_needing_vectors_follow_english_writes(database_url: str, e5: E5Provider) -> None:
    with connect(database_url) as conn:
        gimp_like_site(conn, e5, "shop")
        write_pages(conn, e5, "persian-only", {"http://fa.test/p.html": ("fa", PRINTERS)})
        conn.commit()
        assert tenants_needing_term_vectors(conn, e5.model_name) == ["shop"]
        conn.commit()
        with pytest.raises(ValueError, match="idle connection"):  # inside a transaction: refused
            conn.execute("SELECT 1")
            refresh_term_vectors(conn, "shop", e5)
        conn.commit()
        refresh_term_vectors(conn, "shop", e5)
        assert tenants_needing_term_vectors(conn, e5.model_name) == []
        conn.execute("UPDATE tenant_knowledge SET updated_at = now() WHERE tenant_id = 'shop'"
                     " AND metadata->>'language' = 'en' AND source_id LIKE '%crop%'")
        conn.commit()
        assert tenants_needing_term_vectors(conn, e5.model_name) == ["shop"]


def test_nearest_terms_never_cross_tenants(database_url: str) -> None:
    north, east = np.eye(4, dtype=np.float32)[0], np.eye(4, dtype=np.float32)[1]
    with connect(database_url) as conn:
        conn.execute("ALTER TABLE term_vectors ALTER COLUMN embedding TYPE halfvec(4)")  # small vectors for the test
        store_term_vectors(conn, "a", "m", ["north"], np.array([north]))
        store_term_vectors(conn, "b", "m", ["east"], np.array([east]))
        [(term, similarity)] = nearest_terms(conn, "a", "m", np.array([east]))
        assert term == "north" and similarity == pytest.approx(0.0, abs=1e-3)
        assert nearest_terms(conn, "c", "m", np.array([east])) == [None]
        with pytest.raises(ValueError):
            store_term_vectors(conn, "a", "m", ["x", "y"], np.array([north]))


def test_persian_question_reaches_the_english_page(database_url: str, e5: E5Provider) -> None:
    with connect(database_url) as conn:
        gimp_like_site(conn, e5)
        conn.commit()
        refresh_term_vectors(conn, "shop", e5)
    question = "چطوری یه لایه جدید به عکس اضافه کنم"
    assert "لایه" in translation_words(analyze_query(question))
    with Retriever(database_url, embedder=e5, flags=FeatureFlags(""), config=RetrievalConfig()) as retriever:
        result = retriever.retrieve_context(question, "shop")
    first = result.ranking[0]
    assert first.url == "http://shop.test/layers.html" and "translated" in first.scores
    assert first.url in {chunk.url for chunk in result.primary_context}
    off = RetrievalConfig(translated_bm25_weight=0.0)
    with Retriever(database_url, embedder=e5, flags=FeatureFlags(""), config=off) as retriever:
        plain = retriever.retrieve_context(question, "shop")
    assert not any("translated" in chunk.scores for chunk in plain.ranking)


def test_english_question_and_persian_only_tenant_are_not_translated(database_url: str, e5: E5Provider) -> None:
    assert translation_words(analyze_query("how do I add a new layer")) == ()
    with connect(database_url) as conn:
        write_pages(conn, e5, "fa-shop", {"http://fa.test/p.html": ("fa", PRINTERS)})
    with Retriever(database_url, embedder=e5, flags=FeatureFlags(""), config=RetrievalConfig()) as retriever:
        result = retriever.retrieve_context("چاپگر رو چطوری اضافه کنم", "fa-shop")
    assert result.ranking and not any("translated" in chunk.scores for chunk in result.ranking)


class WordsFail:
    """e5, except that embedding several texts at once (the query's words) fails: a provider
    outage between the query's vector and its words."""

    def __init__(self, e5: E5Provider) -> None:
        self.e5, self.model_name, self.dimension = e5, e5.model_name, e5.dimension

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.e5.embed(texts)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) > 1:
            raise ConnectionError("provider went away")
        return self.e5.embed_queries(texts)


def test_a_failed_translation_degrades_to_the_other_arms(database_url: str, e5: E5Provider) -> None:
    with connect(database_url) as conn:
        gimp_like_site(conn, e5)
        conn.commit()
        refresh_term_vectors(conn, "shop", e5)
    with Retriever(database_url, embedder=WordsFail(e5), flags=FeatureFlags(""), config=RetrievalConfig()) as retriever:
        result = retriever.retrieve_context("چطوری یه لایه جدید به عکس اضافه کنم", "shop")
    assert [d.stage for d in result.degradations] == ["translate"]
    assert result.retrieval_method == "hybrid" and result.ranking


def test_evidence_fusion_adds_the_translated_share() -> None:
    fused = dict(evidence_fusion([(1, 0.9)], [(2, 4.0)], bm25_ceiling=8.0, translated=[(3, 3.0), (1, 6.0)],
                                 translated_ceiling=6.0, translated_weight=0.5))
    assert fused[1] == pytest.approx(0.5 + 0.5) and fused[2] == pytest.approx(0.5) and fused[3] == pytest.approx(0.25)
    assert 3 not in dict(evidence_fusion([], [], translated=[(3, 3.0)], translated_ceiling=6.0))  # weight 0: off


def test_sensor_and_asset_keep_vocabularies_current(database_url: str, e5: E5Provider) -> None:
    database = DatabaseResource(database_url=database_url)
    embedder = EmbeddingResource(model="multilingual-e5-small")
    with connect(database_url) as conn:
        gimp_like_site(conn, e5)
    with dg.instance_for_test() as instance:
        def tick() -> dg.SensorResult:
            return term_vector_sensor(dg.build_sensor_context(
                instance=instance, resources={"database": database, "embedder": embedder}))

        [request] = tick().run_requests
        assert request.tags == TERM_VECTOR_RUN_TAGS
        result = dg.materialize([tenant_term_vectors], instance=instance, tags=request.tags,
                                resources={"database": database, "embedder": embedder})
        assert result.success
        [materialization] = result.asset_materializations_for_node("tenant_term_vectors")
        assert materialization.metadata["tenants"].value == 1 and materialization.metadata["terms_embedded"].value > 0
        assert not tick().run_requests
        english_only = EmbeddingResource(model="all-MiniLM-L6-v2")
        skipped = term_vector_sensor(dg.build_sensor_context(
            instance=instance, resources={"database": database, "embedder": english_only}))
        assert not skipped.run_requests and "Persian" in skipped.skip_reason.skip_message


def test_asset_refuses_a_run_without_the_maintenance_tag(database_url: str) -> None:
    with dg.instance_for_test() as instance:
        result = dg.materialize([tenant_term_vectors], instance=instance, raise_on_error=False, resources={
            "database": DatabaseResource(database_url=database_url),
            "embedder": EmbeddingResource(model="multilingual-e5-small")})
    assert not result.success


def test_a_chunk_written_while_the_model_runs_is_read_next_time(database_url: str, e5: E5Provider) -> None:
    class WritesMeanwhile:
        """e5; while it embeds the vocabulary, a page run rewrites an English chunk."""

        model_name, dimension = e5.model_name, e5.dimension

        def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
            with connect(database_url) as other:
                other.execute("UPDATE tenant_knowledge SET updated_at = now(), search_terms = search_terms || "
                              "'{watermark}'::text[] WHERE tenant_id = 'shop' AND metadata->>'language' = 'en'")
            return e5.embed_queries(texts)

    with connect(database_url) as conn:
        gimp_like_site(conn, e5)
        conn.commit()
        refresh_term_vectors(conn, "shop", WritesMeanwhile())
        assert tenants_needing_term_vectors(conn, e5.model_name) == ["shop"]
        assert terms_without_vectors(conn, "shop", e5.model_name) == ["watermark"]


def test_one_translated_word_is_not_enough(database_url: str, e5: E5Provider) -> None:
    with connect(database_url, autocommit=True) as conn:
        gimp_like_site(conn, e5)
        refresh_term_vectors(conn, "shop", e5)
        one_word = analyze_query("لایه چیه")
        assert translate_query(conn, "shop", e5, one_word, min_similarity=0.9) == ()
        assert translate_query(conn, "shop", e5, one_word, min_similarity=0.9, min_terms=1) == ("layer",)
        two_words = analyze_query("چطوری یه لایه جدید به عکس اضافه کنم")
        assert set(translate_query(conn, "shop", e5, two_words, min_similarity=0.9)) == {"layer", "add"}
