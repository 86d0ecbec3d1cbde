"""Re-embedding manual and FAQ entries after a model change never overwrites a concurrent edit
(`pilito-pipeline add-faq` while the entry is being embedded), and entry runs never overlap."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import dagster as dg
import pytest
from dagster._core.test_utils import create_run_for_test

from pilito_pipeline.app.cli import main as cli_main
from pilito_pipeline.defs.entry_assets import ENTRY_RUN_TAGS, entry_embeddings, stale_entries_sensor
from pilito_pipeline.defs.resources import DatabaseResource, EmbeddingResource
from pilito_pipeline.ingest.sources import faq_source_id, ingest_faq, ingest_manual
from pilito_pipeline.store.db import connect
from pilito_pipeline_tests.waiting import wait_for
from pilito_pipeline_tests.embed.openai_server import EmbeddingServer, running_server

OLD, NEW = "text-embedding-3-small", "text-embedding-3-large"
QUESTION = "Do you ship abroad?"


def embedder(server: EmbeddingServer, model: str) -> EmbeddingResource:
    return EmbeddingResource(provider="openai", model=model, dimension=384, openai_api_key="sk-test",
                             openai_base_url=server.url)


@pytest.fixture
def servers() -> Iterator[tuple[EmbeddingServer, EmbeddingServer]]:
    with running_server() as for_the_run, running_server() as for_the_cli:
        yield for_the_run, for_the_cli


def faq_answer(database_url: str) -> tuple[str, set[str]]:
    with connect(database_url) as conn:
        rows = conn.execute(
            "SELECT full_text, embedding_model FROM tenant_knowledge WHERE source_id = %s AND NOT is_parent",
            (faq_source_id(QUESTION),)).fetchall()
    return " ".join(r["full_text"] for r in rows), {r["embedding_model"] for r in rows}


def test_an_faq_edited_while_it_is_re_embedded_keeps_the_edit(
    database_url: str, servers: tuple[EmbeddingServer, EmbeddingServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    for_the_run, for_the_cli = servers
    old_provider = embedder(for_the_run, OLD).get_provider()
    with connect(database_url) as conn:
        ingest_faq(conn, old_provider, "acme", QUESTION, "No, only within Iran.")
        ingest_manual(conn, old_provider, "acme", "Refunds", "Refunds are paid within fourteen days of a request.")
        conn.commit()

    # The model changes; the entry run's embedding request is held at the provider ...
    for_the_run.admitted.clear()
    before = len(for_the_run.authorizations)
    resources = {"database": DatabaseResource(database_url=database_url), "embedder": embedder(for_the_run, NEW)}
    outcome: list[dg.ExecuteInProcessResult] = []
    with dg.instance_for_test() as instance:
        run = threading.Thread(target=lambda: outcome.append(
            dg.materialize([entry_embeddings], instance=instance, resources=resources, tags=ENTRY_RUN_TAGS)))
        run.start()
        try:
            wait_for("the entry run's first embedding request", lambda: len(for_the_run.authorizations) > before,
                     timeout=300)
            # ... while the tenant edits the FAQ (the CLI, embedding with the new model elsewhere).
            for name, value in {"DATABASE_URL": database_url, "EMBEDDING_PROVIDER": "openai", "EMBEDDING_MODEL": NEW,
                                "EMBEDDING_DIMENSION": "384", "OPENAI_API_KEY": "sk-test",
                                "OPENAI_BASE_URL": for_the_cli.url}.items():
                monkeypatch.setenv(name, value)
            assert cli_main(["add-faq", "--tenant", "acme", "--question", QUESTION,
                             "--answer", "Yes, to every country in Europe and Asia."]) == 0
        finally:
            for_the_run.admitted.set()
            run.join(timeout=300)

    (result,) = outcome
    assert result.success
    answer, models = faq_answer(database_url)
    assert "Europe and Asia" in answer and "only within Iran" not in answer  # before: the old answer came back
    assert models == {NEW}
    metadata = result.asset_materializations_for_node("entry_embeddings")[0].metadata
    assert (metadata["entries_edited_meanwhile"].value, metadata["entries"].value) == (1, 1)  # the FAQ; the manual
    with connect(database_url) as conn:  # every entry is of the new model now
        assert conn.execute("SELECT DISTINCT embedding_model FROM tenant_knowledge WHERE NOT is_parent").fetchall() == [
            {"embedding_model": NEW}]


def test_no_entry_run_is_launched_while_one_is_queued_or_running(
    database_url: str, servers: tuple[EmbeddingServer, EmbeddingServer]
) -> None:
    for_the_run, _ = servers
    with connect(database_url) as conn:
        ingest_faq(conn, embedder(for_the_run, OLD).get_provider(), "acme", QUESTION, "No.")
        conn.commit()
    resources = {"database": DatabaseResource(database_url=database_url), "embedder": embedder(for_the_run, NEW)}
    with dg.instance_for_test() as instance:
        (request,) = stale_entries_sensor(dg.build_sensor_context(instance=instance, resources=resources)).run_requests
        assert request.tags == ENTRY_RUN_TAGS
        create_run_for_test(instance, job_name="__ASSET_JOB", tags=request.tags, status=dg.DagsterRunStatus.STARTED)
        result = stale_entries_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        assert result.run_requests == [] and "queued or running" in result.skip_reason.skip_message
