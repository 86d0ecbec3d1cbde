"""Run-wide embedding with reuse, against the OpenAI-compatible test server and the real database."""

from __future__ import annotations

import numpy as np
import pytest

from pilito_pipeline.embed import (
    EmbedCounts, OpenAIProvider, ProviderMisconfigured, ProviderUnavailable, embed_groups, embed_rows, provider_breaker,
)
from pilito_pipeline.store.db import connect
from pilito_pipeline.store.knowledge import KnowledgeRow, UpsertStats, embedding_text, load_sources, upsert_sources
from pilito_pipeline_tests.embed.openai_server import EmbeddingServer, Failure, expected_vector
from pilito_pipeline_tests.store.test_knowledge import latent_terms, make_rows, row_versions

DIMENSION = 384
PAGES = [("t1", "website", f"p{i}") for i in range(4)]


def fresh_rows(version: str = "v1") -> dict[tuple[str, str, str], list[KnowledgeRow]]:
    """What the chunking step hands over: rows without embeddings (one parent per page)."""
    data = {key: make_rows(key, 4, version, with_parent=True) for key in PAGES}
    for rows in data.values():
        for row in rows:
            row.embedding_model, row.full_embedding, row.tldr_embedding = None, None, None
    return data


def provider(server: EmbeddingServer, model: str = "text-embedding-3-small") -> OpenAIProvider:
    return OpenAIProvider(model, DIMENSION, api_key="k", base_url=server.url, max_retries=0, max_inputs_per_request=2048)


def all_rows(data) -> list[KnowledgeRow]:
    return [row for rows in data.values() for row in rows]


def test_embeds_a_whole_run_in_one_request_and_reuses_on_rerun(
    database_url: str, embedding_server: EmbeddingServer
) -> None:
    data = fresh_rows()
    data[PAGES[1]][2].full_text = data[PAGES[0]][2].full_text  # a repeated text is embedded once
    counts = embed_rows(all_rows(data), provider(embedding_server))
    assert counts == EmbedCounts(embedded=4 * 3 * 2 - 1, reused=0)
    assert embedding_server.inputs_per_request == [23]
    child = data[PAGES[0]][1]
    assert child.embedding_model == "text-embedding-3-small"
    np.testing.assert_allclose(child.full_embedding, expected_vector(embedding_text(child), DIMENSION), atol=1e-6)
    assert embedding_text(child) == f"{child.section_title}\n{child.full_text}"  # the heading path leads
    np.testing.assert_allclose(child.tldr_embedding, expected_vector(child.tldr, DIMENSION), atol=1e-6)
    assert data[PAGES[0]][0].full_embedding is None  # parents are not embedded

    with connect(database_url) as conn:
        upsert_sources(conn, data)
        conn.commit()
        before = row_versions(conn)

        rerun = fresh_rows()
        rerun[PAGES[1]][2].full_text = rerun[PAGES[0]][2].full_text
        assert embed_rows(all_rows(rerun), provider(embedding_server), reuse_from=conn) == EmbedCounts(0, 24)
        assert len(embedding_server.requests) == 1  # no new provider call
        stats = upsert_sources(conn, rerun)
        conn.commit()
        assert (stats.inserted, stats.updated, stats.deleted, stats.unchanged) == (0, 0, 0, 16)
        assert row_versions(conn) == before

        edited = fresh_rows()
        edited[PAGES[1]][2].full_text = edited[PAGES[0]][2].full_text
        edited[PAGES[3]][3].full_text = "a new paragraph"
        assert embed_rows(all_rows(edited), provider(embedding_server), reuse_from=conn) == EmbedCounts(1, 23)
        assert embedding_server.requests[-1]["input"] == ["section v1\na new paragraph"]
        assert upsert_sources(conn, edited).updated == 1


def test_a_new_model_re_embeds_everything(database_url: str, embedding_server: EmbeddingServer) -> None:
    data = fresh_rows()
    embed_rows(all_rows(data), provider(embedding_server))
    with connect(database_url) as conn:
        upsert_sources(conn, data)
        rerun = fresh_rows()
        counts = embed_rows(all_rows(rerun), provider(embedding_server, "text-embedding-3-large"), reuse_from=conn)
        assert counts == EmbedCounts(embedded=24, reused=0)
        assert upsert_sources(conn, rerun).updated == 12
        stored = load_sources(conn, PAGES)
    assert {r.embedding_model for rows in stored.values() for r in rows if not r.is_parent} == {"text-embedding-3-large"}


@pytest.mark.parametrize("breaker_open", [False, True])
def test_a_failing_provider_leaves_rows_untouched(
    embedding_server: EmbeddingServer, redis_url: str, redis_prefix: str, breaker_open: bool
) -> None:
    breaker = provider_breaker("openai:batch", redis_url, key_prefix=redis_prefix, fail_max=1)
    guarded = OpenAIProvider(
        "text-embedding-3-small", DIMENSION, api_key="k", base_url=embedding_server.url,
        max_retries=0, max_inputs_per_request=5, breaker=breaker,
    )
    embedding_server.fail_next(None, None, Failure(503))  # two requests succeed, the third fails
    if breaker_open:
        breaker.open()
    data = fresh_rows()
    with pytest.raises(ProviderUnavailable):
        embed_rows(all_rows(data), guarded)
    assert len(embedding_server.requests) == (0 if breaker_open else 2)
    assert all(row.full_embedding is None and row.embedding_model is None for row in all_rows(data))


def test_a_refused_group_is_isolated_by_halving_and_the_others_are_embedded(embedding_server: EmbeddingServer) -> None:
    groups = {f"p{i}": make_rows(("t1", "website", f"p{i}"), 2, "v1") for i in range(8)}
    groups["p5"][1].full_text = "POISON in this chunk"
    embedding_server.refuse_inputs_containing = "POISON"

    counts, refused = embed_groups(groups, provider(embedding_server), tldr=False)

    assert list(refused) == ["p5"] and "cannot be embedded" in refused["p5"]
    assert all(row.full_embedding is not None for key, rows in groups.items() if key != "p5" for row in rows)
    assert counts.embedded == 7 * 2
    assert len(embedding_server.authorizations) <= 1 + 2 * 3  # the whole, then two halves per level


def test_a_provider_that_refuses_everything_blames_no_group(embedding_server: EmbeddingServer) -> None:
    groups = {f"p{i}": make_rows(("t1", "website", f"p{i}"), 2, "v1") for i in range(4)}
    embedding_server.always_fail = Failure(401)
    with pytest.raises(ProviderMisconfigured):
        embed_groups(groups, provider(embedding_server), tldr=False)
    assert len(embedding_server.authorizations) == 1


class WithSparseHead(OpenAIProvider):
    """The test server's model plus a sparse head (deterministic latent terms per text), counting
    the texts it is asked for: what `embed_rows` does with e5's latent terms, without e5's cost."""

    def __init__(self, server: EmbeddingServer) -> None:
        super().__init__("text-embedding-3-small", DIMENSION, api_key="k", base_url=server.url, max_retries=0)
        self.latent_asked: list[list[str]] = []

    def embed_with_latent_terms(self, texts):  # noqa: ANN001, ANN201 - the provider protocol's optional method
        self.latent_asked.append(list(texts))
        return self.embed(texts), [latent_terms(text) for text in texts]


def test_latent_terms_are_computed_for_full_texts_once_and_reused(
    database_url: str, embedding_server: EmbeddingServer
) -> None:
    data = fresh_rows()
    with_head = WithSparseHead(embedding_server)
    assert embed_rows(all_rows(data), with_head) == EmbedCounts(embedded=24, reused=0)
    children = [row for row in all_rows(data) if not row.is_parent]
    assert with_head.latent_asked == [[embedding_text(row) for row in children]]  # TL;DRs get none
    assert embedding_server.inputs_per_request == [12, 12]  # full texts (with their terms), then TL;DRs
    assert all(np.array_equal(row.latent_terms.values, latent_terms(embedding_text(row)).values) for row in children)
    assert all(row.latent_terms is None for row in all_rows(data) if row.is_parent)
    with connect(database_url) as conn:
        upsert_sources(conn, data)
        rerun = fresh_rows()
        rerun[PAGES[2]][1].full_text = "a new paragraph"
        embed_rows(all_rows(rerun), with_head, reuse_from=conn)
        assert with_head.latent_asked[1:] == [["section v1\na new paragraph"]]  # the rest reused from the store
        stats = upsert_sources(conn, rerun)
        assert (stats.updated, stats.unchanged) == (1, 15)
        without_head = fresh_rows()  # the model lost its head: the terms are dropped, not kept stale
        embed_rows(all_rows(without_head), provider(embedding_server), reuse_from=conn)
        assert all(row.latent_terms is None for row in all_rows(without_head))
        assert upsert_sources(conn, without_head) == UpsertStats(updated=12, unchanged=4)  # 4 parents
        stored = {(r.source_id, r.chunk_index): r.full_embedding for rows in load_sources(conn, PAGES).values()
                  for r in rows}

        upgraded = fresh_rows()  # rows written without a head get their terms; their vectors stay as stored
        assert embed_rows(all_rows(upgraded), with_head, reuse_from=conn) == EmbedCounts(embedded=12, reused=24)
        assert len(with_head.latent_asked[-1]) == 12
        assert all(np.array_equal(row.full_embedding, stored[row.source_id, row.chunk_index])
                   for row in all_rows(upgraded) if not row.is_parent)
        assert upsert_sources(conn, upgraded) == UpsertStats(updated=12, unchanged=4)
