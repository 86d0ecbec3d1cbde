"""Changing the embedding model re-embeds every page, manual and FAQ entry (and nothing else does);
dense search never compares vectors of two models."""

from typing import Any

import dagster as dg
import pytest

from pilito_pipeline.defs.entry_assets import entry_embeddings, stale_entries_sensor
from pilito_pipeline.defs.resources import EmbeddingResource
from pilito_pipeline.embed.local import packaged_model_path
from pilito_pipeline.ingest.sources import ingest_faq, ingest_manual
from pilito_pipeline.retrieval.dense import dense_search
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


def test_a_new_model_re_embeds_manual_and_faq_entries_and_dense_search_never_mixes_models(
    database_url: str, instance: dg.DagsterInstance, resources: dict[str, Any]
) -> None:
    """Before: only website pages were re-embedded, and dense search ranked the old model's vectors
    (same dimension, another vector space) with the new model's query vector."""
    old = resources["embedder"]
    with connect(database_url) as conn:
        ingest_manual(conn, old.get_provider(), "acme", "Refund policy",
                      "Refunds are paid within fourteen days of a written request. Shipping costs are not refunded.")
        ingest_faq(conn, old.get_provider(), "acme", "Do you ship abroad?", "Yes, to every country in Europe and Asia.")
        entries_before = conn.execute("SELECT count(*) AS n FROM tenant_knowledge").fetchone()["n"]
    new = EmbeddingResource(model=str(packaged_model_path()))  # same weights, another name: same dimension
    assert new.model_name != old.model_name and new.dimension == old.dimension
    query = new.get_provider().embed(["refund after fourteen days"])[0]
    with connect(database_url, autocommit=True) as conn:
        assert dense_search(conn, "acme", ["manual", "faq"], query, 10, model=new.model_name, plan="exact") == []
        assert dense_search(conn, "acme", ["manual", "faq"], query, 10, model=old.model_name, plan="exact")

    switched = {**resources, "embedder": new}
    sensor = dg.build_sensor_context(instance=instance, resources={"database": switched["database"], "embedder": new})
    (request,) = stale_entries_sensor(sensor).run_requests
    outcome = dg.materialize([entry_embeddings], instance=instance, resources=switched, tags=request.tags)
    assert outcome.success

    with connect(database_url, autocommit=True) as conn:
        models = conn.execute(
            "SELECT chunk_type, array_agg(DISTINCT embedding_model) AS models FROM tenant_knowledge"
            " WHERE NOT is_parent GROUP BY chunk_type ORDER BY chunk_type"
        ).fetchall()
        assert [(m["chunk_type"], m["models"]) for m in models] == [("faq", [new.model_name]), ("manual", [new.model_name])]
        assert conn.execute("SELECT count(*) AS n FROM tenant_knowledge").fetchone()["n"] == entries_before
        found = dense_search(conn, "acme", ["manual", "faq"], query, 10, model=new.model_name, plan="exact")
        assert found and found[0][1] > 0.5
    assert stale_entries_sensor(dg.build_sensor_context(
        instance=instance, resources={"database": switched["database"], "embedder": new})).run_requests == []
