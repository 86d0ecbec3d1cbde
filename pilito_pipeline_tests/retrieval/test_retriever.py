"""The whole pipeline on a real database and the packaged embedder: isolation, fallbacks, flags, metrics."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pilito_pipeline.embed import build_provider
from pilito_pipeline.retrieval import FeatureFlags, RetrievalConfig, RetrievalUnavailable, Retriever
from pilito_pipeline.settings import Settings
from pilito_pipeline.store.db import connect
from pilito_pipeline_tests.retrieval.conftest import ChunkSpec, insert_chunks

SCHOOL = [
    ("website", "p1", "IELTS course", "The IELTS preparation course has 12 sessions and costs 12,000,000 toman.",
     "http://school/courses/ielts"),
    ("website", "p2", "Scholarships", "We offer scholarships to students with excellent grades every term.",
     "http://school/scholarships"),
    ("website", "p3", "شهریه", "شهریه دوره آیلتس دوازده میلیون تومان است و در سه قسط پرداخت می‌شود.",
     "http://school/fa/fees"),
    ("website", "p4", "Contact", "Our office in Tehran is open Saturday to Wednesday from 9 to 17.",
     "http://school/contact"),
    ("faq", "f1", "", "Do you have online classes? Yes, every course is also offered online.", None),
    ("manual", "m1", "Refunds", "Refunds are possible until the second session of a course.", None),
]
CLINIC = [
    ("website", "p1", "Dental implants", "Our clinic places dental implants; scholarships are not offered.",
     "http://clinic/implants"),
    ("website", "p2", "Hours", "The clinic is open every day from 8 to 20, also online consultations.",
     "http://clinic/hours"),
    ("faq", "f1", "", "Do you accept insurance? Yes, most insurance plans are accepted.", None),
]


def specs(tenant: str, rows, embedder) -> list[ChunkSpec]:
    vectors = embedder.embed([f"{title} {text}".strip() for _, _, title, text, _ in rows])
    return [ChunkSpec(tenant, text, section_title=title, chunk_type=kind, source_id=source, url=url,
                      tldr=text, full_embedding=v, tldr_embedding=v)
            for (kind, source, title, text, url), v in zip(rows, vectors, strict=True)]


@pytest.fixture
def corpus(database_url: str, embedder) -> dict[str, dict[int, str]]:
    """tenant -> {chunk id: chunk type}."""
    with connect(database_url) as conn:
        found = {}
        for tenant, rows in (("school", SCHOOL), ("clinic", CLINIC)):
            ids = insert_chunks(conn, specs(tenant, rows, embedder))
            found[tenant] = {i: row[0] for i, row in zip(ids, rows, strict=True)}
        conn.commit()
    return found


def make_retriever(database_url: str, embedder, **config) -> Retriever:
    return Retriever(database_url, embedder=embedder, flags=FeatureFlags(""), config=RetrievalConfig(**config),
                     pool_size=2, pool_timeout_seconds=60)  # generous: a loaded machine connects slowly


def urls(chunks) -> list[str | None]:
    return [c.url for c in chunks]


def test_hybrid_answer_has_the_seeds_shape(database_url: str, embedder, corpus) -> None:
    retriever = make_retriever(database_url, embedder)
    result = retriever.retrieve_context("Do you offer scholarships for students?", "school",
                                        primary_source="website", secondary_sources=["faq", "manual"])
    assert result.retrieval_method == "hybrid" and not result.degradations
    assert urls(result.primary_context)[0] == "http://school/scholarships"
    top = result.primary_context[0]
    assert {"dense", "bm25", "fused"} <= top.scores.keys()
    assert {c.chunk_type for c in result.secondary_context} <= {"faq", "manual"}
    assert result.dense_plan == "exact" and result.tenant_chunks == len(SCHOOL)
    data = result.to_dict()
    assert data["total_chunks"] == len(data["primary_context"]) + len(data["secondary_context"]) > 0
    assert {"latency_ms", "stages_ms"} <= data["performance"].keys()
    assert {"embed", "dense", "bm25", "fusion", "packing"} <= data["performance"]["stages_ms"].keys()
    first = data["primary_context"][0]
    assert {"text", "section_title", "url", "chunk_type", "scores"} <= first.keys()
    assert data["context_block"].startswith("[1] Scholarships — http://school/scholarships\n")
    retriever.close()


def test_persian_query_finds_persian_text(database_url: str, embedder, corpus) -> None:
    with make_retriever(database_url, embedder) as retriever:
        result = retriever.retrieve_context("شهریه دوره آیلتس چقدر است؟", "school")
    assert result.query.language == "fa"
    assert urls(result.primary_context)[0] == "http://school/fa/fees"
    assert "bm25" in result.primary_context[0].scores


VOCABULARY = ["IELTS", "course", "scholarships", "clinic", "online", "insurance", "شهریه", "آیلتس",
              "refunds", "open", "Tehran", "implants", "students", "hours", "toman", "classes"]


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(tenant=st.sampled_from(["school", "clinic", "nobody", "schoo", "school "]),
       words=st.lists(st.sampled_from(VOCABULARY), min_size=1, max_size=6),
       primary=st.sampled_from(["website", "faq", "manual"]),
       secondary=st.lists(st.sampled_from(["website", "faq", "manual"]), max_size=3))
def test_never_another_tenants_chunk(database_url: str, embedder, corpus, tenant: str, words: list[str],
                                     primary: str, secondary: list[str]) -> None:
    retriever = make_retriever(database_url, embedder)
    try:
        result = retriever.retrieve_context(" ".join(words), tenant, primary, secondary, 400, 300)
    finally:
        retriever.close()
    own = corpus.get(tenant, {})
    for chunk in result.primary_context:
        assert own.get(chunk.chunk_id) == primary
    for chunk in result.secondary_context:
        assert own.get(chunk.chunk_id) in set(secondary) - {primary}
    if not own:
        assert result.total_chunks == 0


def test_no_embedder_falls_back_to_bm25(database_url: str, corpus) -> None:
    broken = Settings(embedding_provider="openai", embedding_model="all-MiniLM-L6-v2")
    retriever = make_retriever(database_url, lambda: build_provider(broken))
    result = retriever.retrieve_context("scholarships", "school")
    assert result.retrieval_method == "bm25_only"
    assert [d.stage for d in result.degradations] == ["embedding"]
    assert urls(result.primary_context)[0] == "http://school/scholarships"
    assert retriever.metrics.value("rag_errors_total", {"method": "production_rag", "error_type": "embedding"}) == 1
    retriever.close()
    with make_retriever(database_url, None) as plain:
        assert plain.retrieve_context("scholarships", "school").retrieval_method == "bm25_only"


@pytest.mark.parametrize(("column", "config"), [("full_embedding", {}), ("tldr_embedding", {"dense_tldr": True})])
def test_dense_failure_falls_back_to_bm25(database_url: str, embedder, corpus, column: str, config: dict) -> None:
    """(The TL;DR column is only read when `dense_tldr` is on.)"""
    with connect(database_url) as conn:
        conn.execute(f"ALTER TABLE tenant_knowledge RENAME COLUMN {column} TO {column}_moved")
        conn.commit()
    with make_retriever(database_url, embedder, **config) as retriever:
        result = retriever.retrieve_context("scholarships for students", "school")
    assert result.retrieval_method == "bm25_only"
    assert [d.stage for d in result.degradations] == ["dense"] and "UndefinedColumn" in result.degradations[0].reason
    assert urls(result.primary_context)[0] == "http://school/scholarships"


def test_bm25_failure_falls_back_to_dense(database_url: str, embedder, corpus) -> None:
    with connect(database_url) as conn:
        conn.execute("ALTER TABLE bm25_postings RENAME TO bm25_postings_moved")
        conn.commit()
    with make_retriever(database_url, embedder) as retriever:
        result = retriever.retrieve_context("scholarships for students", "school")
    assert result.retrieval_method == "dense_only"
    assert [d.stage for d in result.degradations] == ["bm25"]
    assert result.primary_context and "bm25" not in result.primary_context[0].scores


def test_rerank_with_a_local_cross_encoder(database_url: str, embedder, corpus, tiny_cross_encoder: Path) -> None:
    with make_retriever(database_url, embedder, rerank_model=str(tiny_cross_encoder), rerank_top_k=3) as retriever:
        result = retriever.retrieve_context("scholarships", "school", secondary_sources=["faq"])
        assert result.retrieval_method == "hybrid+rerank"
        scores = [c.scores["rerank"] for c in result.primary_context]
        assert scores == sorted(scores, reverse=True) and len(scores) <= 3
        label = {"model": tiny_cross_encoder.name, "outcome": "ok"}
        assert retriever.metrics.value("rag_reranking_total", label) == 1
        assert retriever.metrics.value("rag_reranking_latency_seconds_count", {"model": tiny_cross_encoder.name}) == 1


def test_unloadable_rerank_model_keeps_fused_order(database_url: str, embedder, corpus, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    missing = str(tmp_path / "missing-model")
    with caplog.at_level(logging.WARNING), make_retriever(database_url, embedder, rerank_model=missing) as retriever:
        fused = [make_retriever(database_url, embedder).retrieve_context("scholarships", "school")]
        results = [retriever.retrieve_context("scholarships", "school") for _ in range(2)]
    assert all(r.retrieval_method == "hybrid" for r in results)
    assert all([d.stage for d in r.degradations] == ["rerank"] for r in results)
    assert [c.chunk_id for c in results[0].primary_context] == [c.chunk_id for c in fused[0].primary_context]
    assert len([r for r in caplog.records if "could not be loaded" in r.message]) == 1


def test_flags_switch_paths(database_url: str, embedder, corpus, redis_url: str, redis_prefix: str,
                            tiny_cross_encoder: Path) -> None:
    flags = FeatureFlags(redis_url, key_prefix=redis_prefix, cache_seconds=0)
    retriever = Retriever(database_url, embedder=embedder, flags=flags, pool_size=2, pool_timeout_seconds=60)
    assert retriever.retrieve_context("scholarships", "school").retrieval_method == "hybrid"
    flags.set_flag("rerank_model", str(tiny_cross_encoder))
    flags.set_flag("rerank_top_k", 2)
    reranked = retriever.retrieve_context("scholarships", "school")
    assert reranked.retrieval_method == "hybrid+rerank" and len(reranked.primary_context) <= 2
    flags.set_flag("cross_encoder_reranking", False)
    assert retriever.retrieve_context("scholarships", "school").retrieval_method == "hybrid"
    flags.set_flag("production_rag", False)
    legacy = retriever.retrieve_context("scholarships", "school")
    assert legacy.retrieval_method == "legacy_dense"
    assert all("bm25" not in c.scores for c in legacy.primary_context)
    assert retriever.metrics.value("rag_retrieval_total", {"method": "legacy_dense", "primary_source": "website"}) == 1
    retriever.close()


def test_metrics_are_recorded(database_url: str, embedder, corpus) -> None:
    with make_retriever(database_url, embedder) as retriever:
        result = retriever.retrieve_context("IELTS course fee", "school", secondary_sources=["faq"])
        m = retriever.metrics
        assert m.value("rag_retrieval_total", {"method": "hybrid", "primary_source": "website"}) == 1
        assert m.value("rag_retrieval_latency_seconds_count", {"method": "hybrid"}) == 1
        assert m.value("rag_chunks_retrieved_sum", {"method": "hybrid", "source": "primary"}) == len(
            result.primary_context)
        assert m.value("rag_chunk_scores_count", {"source": "fused"}) == result.total_chunks
        assert m.value("rag_query_complexity_total", {"complexity": "simple", "language": "en"}) == 1
        assert m.value("rag_stage_latency_seconds_count", {"stage": "bm25"}) == 1
        assert m.value("rag_errors_total", {"method": "production_rag", "error_type": "dense"}) == 0


def test_database_down_raises(embedder) -> None:
    retriever = Retriever("postgresql://pilito@127.0.0.1:1/none", embedder=embedder, pool_size=1,
                          pool_timeout_seconds=1)
    with pytest.raises(RetrievalUnavailable, match="unusable"):
        retriever.retrieve_context("scholarships", "school")
    assert retriever.metrics.value("rag_errors_total", {"method": "production_rag", "error_type": "database"}) == 1
    retriever.close()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"tenant_id": ""}, "tenant_id"), ({"primary_source": "blog"}, "unknown chunk type"),
    ({"secondary_sources": "faq"}, "not a string"), ({"primary_budget": -1}, "budgets"),
    ({"query": " "}, "query"),
])
def test_bad_arguments_are_refused(database_url: str, kwargs: dict, message: str) -> None:
    call = {"query": "q", "tenant_id": "school", **kwargs}
    with make_retriever(database_url, None) as retriever, pytest.raises(ValueError, match=message):
        retriever.retrieve_context(**call)


def test_sibling_children_are_expanded_to_their_parent(database_url: str, embedder) -> None:
    section = ("Summer term. The summer IELTS class meets on Mondays. The summer IELTS class also meets on"
               " Thursdays. Registration closes in May.")
    children = ["The summer IELTS class meets on Mondays.", "The summer IELTS class also meets on Thursdays."]
    vectors = embedder.embed(children)
    with connect(database_url) as conn:
        parent_id, *_ = insert_chunks(conn, [
            ChunkSpec("school", section, section_title="Summer", chunk_index=0, is_parent=True, url="http://s/summer"),
            *[ChunkSpec("school", text, section_title="Summer", chunk_index=i + 1, parent_chunk_index=0,
                        url="http://s/summer", full_embedding=v) for i, (text, v) in enumerate(zip(children, vectors))],
        ])
        conn.commit()
    with make_retriever(database_url, embedder) as retriever:
        result = retriever.retrieve_context("summer IELTS class days", "school")
    assert result.primary_context[0].chunk_id == parent_id
    assert len(result.primary_context[0].expanded_from) == 2


def test_arms_switch_selects_the_searches(database_url: str, embedder, corpus) -> None:
    """The evaluation's per-method rows are these switches of the production retriever."""
    for arms, method, stage in (("dense", "dense_only", "dense"), ("bm25", "bm25_only", "bm25"),
                                ("hybrid", "hybrid", None)):
        with make_retriever(database_url, embedder, arms=arms) as retriever:
            result = retriever.retrieve_context("scholarships for excellent grades", "school")
        assert result.retrieval_method == method
        assert result.ranking and result.ranking[0].url == "http://school/scholarships"
        if stage == "dense":
            assert all("bm25" not in c.scores for c in result.ranking) and "bm25" not in result.stages_ms
        if stage == "bm25":
            assert all("dense" not in c.scores for c in result.ranking) and "embed" not in result.stages_ms


def test_a_zero_weight_arm_contributes_no_candidates(database_url: str, embedder, corpus) -> None:
    """Dense weight 0 for Persian (an English-only embedder): no query embedding, no dense search,
    and none of the dense arm's candidates pad the fused list with score 0."""
    with make_retriever(database_url, embedder, persian_dense_weight=0.0) as retriever:
        result = retriever.retrieve_context("شهریه آیلتس", "school")
    assert result.retrieval_method == "bm25_only" and "embed" not in result.stages_ms
    assert result.ranking and all("bm25" in c.scores and "dense" not in c.scores for c in result.ranking)
    assert [c.url for c in result.ranking] == ["http://school/fa/fees"]
    with make_retriever(database_url, embedder, persian_dense_weight=1.0) as retriever:
        padded = retriever.retrieve_context("شهریه آیلتس", "school")
    assert padded.retrieval_method == "hybrid" and len(padded.ranking) > 1  # dense adds its candidates


def test_doublet_variants_reach_bm25(database_url: str, embedder) -> None:
    """The page says گذرواژه; the customer writes رمز عبور: found only with the variants on."""
    rows = [("website", "p1", "تغییر گذرواژه", "برای تغییر گذرواژه‌تان به بخش حساب بروید.", "http://s/password"),
            ("website", "p2", "ساعات کاری", "دفتر ما از شنبه تا چهارشنبه باز است.", "http://s/hours")]
    with connect(database_url) as conn:
        insert_chunks(conn, specs("shop", rows, embedder))
        conn.commit()
    query = "چطور رمز عبورم را عوض کنم؟"
    with make_retriever(database_url, embedder, arms="bm25", variants_bm25=True) as retriever:
        expanded = retriever.retrieve_context(query, "shop")
    with make_retriever(database_url, embedder, arms="bm25", variants_bm25=False) as retriever:
        plain = retriever.retrieve_context(query, "shop")
    assert "گذرواژه" in expanded.query.variant_terms
    assert [c.url for c in expanded.ranking][:1] == ["http://s/password"]
    assert "http://s/password" not in [c.url for c in plain.ranking]
