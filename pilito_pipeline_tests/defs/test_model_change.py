"""Changing the embedding model re-embeds every page (and nothing else does)."""

from typing import Any

import dagster as dg
import pytest

from pilito_pipeline.defs.resources import EmbeddingResource
from pilito_pipeline.embed.local import packaged_model_path
from pilito_pipeline.store.db import connect
from pilito_pipeline_tests.defs.conftest import register, run_sensors_and_runs

pytestmark = pytest.mark.slow


def stored_models(database_url: str) -> set[str]:
    with connect(database_url) as conn:
        rows = conn.execute("SELECT DISTINCT embedding_model FROM tenant_knowledge WHERE NOT is_parent").fetchall()
    return {row["embedding_model"] for row in rows}


def test_a_new_model_re_embeds_all_pages_once(
    database_url: str, demo_site: str, instance: dg.DagsterInstance, resources: dict[str, Any]
) -> None:
    register(database_url, "acme", demo_site)
    first = run_sensors_and_runs(instance, resources)
    assert stored_models(database_url) == {"sentence-transformers/all-MiniLM-L6-v2"}

    # The same weights named by their folder: a different model name, as a real switch would be.
    new_model = str(packaged_model_path())
    switched = {**resources, "embedder": EmbeddingResource(model=new_model)}
    again = run_sensors_and_runs(instance, switched)
    assert again["crawl_runs"] == 0 and again["page_runs"] >= 1
    assert again["embeddings_computed"] == first["embeddings_computed"]
    assert again["embeddings_reused"] == 0
    assert stored_models(database_url) == {new_model}

    settled = run_sensors_and_runs(instance, switched)
    assert settled["page_runs"] == 0
