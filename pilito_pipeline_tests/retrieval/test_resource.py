"""RetrievalResource from plain Python (the chat backend) and inside Dagster."""

from __future__ import annotations

import dagster as dg
import pytest

from pilito_pipeline.defs.retrieval_resource import RetrievalResource
from pilito_pipeline.store.db import connect
from pilito_pipeline_tests.retrieval.conftest import ChunkSpec, insert_chunks


@pytest.fixture
def knowledge(database_url: str, embedder) -> None:
    text = "We offer scholarships to students with excellent grades."
    with connect(database_url) as conn:
        insert_chunks(conn, [ChunkSpec("acme", text, section_title="Scholarships", url="http://acme/s",
                                       full_embedding=embedder.embed([text])[0])])
        conn.commit()


def test_plain_python_from_env(monkeypatch: pytest.MonkeyPatch, database_url: str, redis_url: str,
                               redis_prefix: str, knowledge: None) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("RERANK_MODEL", "")
    monkeypatch.setenv("EMBEDDING_MODEL", "all-MiniLM-L6-v2")  # the model `knowledge` was embedded with
    from pilito_pipeline.settings import settings_from_env

    rag = RetrievalResource.from_env(settings_from_env()).model_copy(update={"flags_key_prefix": redis_prefix})
    result = rag.retrieve_context("scholarships?", "acme", secondary_sources=["faq"])
    assert result.retrieval_method == "hybrid" and result.primary_context[0].url == "http://acme/s"
    rag.flags.set_flag("production_rag", False)
    assert rag.retrieve_context("scholarships?", "acme").retrieval_method == "legacy_dense"
    assert rag.metrics.value("rag_retrieval_total", {"method": "hybrid", "primary_source": "website"}) == 1


def test_inside_dagster(database_url: str, knowledge: None) -> None:
    with dg.build_resources({"rag": RetrievalResource(database_url=database_url)}) as resources:
        result = resources.rag.retrieve_context("scholarships", "acme")
    assert result.total_chunks == 1
