"""Context packing: budgets (property-based), near duplicates, parent expansion, truncation."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pilito_pipeline.retrieval.packing import (
    RetrievedChunk,
    TokenCounter,
    expand_parents,
    format_context,
    pack_budget,
    pages_first,
    remove_near_duplicates,
)

COUNTER = TokenCounter()


def chunk(chunk_id: int, text: str, *, parent: int | None = None, source: str = "p1", index: int | None = None,
          title: str = "Section") -> RetrievedChunk:
    return RetrievedChunk(chunk_id=chunk_id, chunk_type="website", source_id=source, document_id=None,
                          chunk_index=chunk_id if index is None else index, parent_chunk_index=parent,
                          section_title=title, text=text, tldr="", url=f"http://site/{source}",
                          scores={"rrf": 1 / (60 + chunk_id)})


def test_counter_uses_the_real_tokenizer() -> None:
    assert COUNTER.count("Do you offer scholarships?") == 7  # ▁Do ▁you ▁offer ▁scholar ship s ?
    # XLM-R's pieces cover Persian words (the MiniLM WordPiece used before spent about one token a letter)
    assert COUNTER.count("کلاس‌های آیلتس چه روزهایی برگزار می‌شود؟") == 14
    assert COUNTER.count("") == 0
    long_text = "word " * 300
    assert COUNTER.count(COUNTER.truncate(long_text, 50)) == 50


WORDS = st.sampled_from(["course", "visa", "شهریه", "آیلتس", "کلاس", "price", "IELTS", "ترم", "۱۲۰۰", "€"])
TEXTS = st.lists(WORDS, min_size=1, max_size=120).map(" ".join)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(TEXTS, min_size=0, max_size=10), budget=st.integers(min_value=0, max_value=400),
       first=st.integers(min_value=1, max_value=30))
def test_packing_never_exceeds_the_budget(texts: list[str], budget: int, first: int) -> None:
    chunks = [chunk(i, text) for i, text in enumerate(texts)]
    packed = pack_budget(chunks, budget, COUNTER, first)
    assert sum(c.tokens for c in packed) <= budget
    assert COUNTER.count(format_context(packed, [])) <= budget  # what the LLM really receives
    assert [c.citation for c in packed] == list(range(first, first + len(packed)))
    for c in packed:
        assert c.tokens == COUNTER.count(f"[{c.citation}] Section — http://site/p1\n{c.text}")
    untruncated = [c for c in packed if not c.truncated]
    order = [c.chunk_id for c in packed]
    assert order == sorted(order)  # rank order kept
    assert all(c.text == texts[c.chunk_id] for c in untruncated)


def test_a_too_long_best_chunk_is_cut_and_smaller_ones_still_fit() -> None:
    packed = pack_budget([chunk(0, "alpha " * 500), chunk(1, "beta " * 5)], 120, COUNTER)
    assert packed[0].truncated and packed[0].chunk_id == 0
    assert sum(c.tokens for c in packed) <= 120
    skipped = pack_budget([chunk(0, "short text"), chunk(1, "gamma " * 500), chunk(2, "delta")], 40, COUNTER)
    assert [c.chunk_id for c in skipped] == [0, 2]  # a later long chunk is skipped, not cut


def test_near_duplicates_keep_the_better_ranked() -> None:
    base = "The summer IELTS course starts in June and costs twelve million toman per term"
    chunks = [chunk(1, base), chunk(2, "Completely different text about visa consulting services"),
              chunk(3, base + " only"), chunk(4, base.upper())]
    assert [c.chunk_id for c in remove_near_duplicates(chunks, 0.85)] == [1, 2]
    assert [c.chunk_id for c in remove_near_duplicates(chunks, 1.0)] == [1, 2, 3]


def test_two_siblings_become_their_parent_when_it_fits() -> None:
    parent = chunk(10, "Full section: part one. part two. part three.", index=0)
    children = [chunk(11, "part one", parent=0, index=1), chunk(5, "other page", source="p2"),
                chunk(12, "part two", parent=0, index=2)]
    parents = {("website", "p1", 0): parent}
    expanded = expand_parents(children, parents, COUNTER, budget=200)
    assert [c.chunk_id for c in expanded] == [10, 5]
    assert expanded[0].expanded_from == (11, 12)
    assert expanded[0].scores["rrf"] == pytest.approx(1 / 71)  # the best child's score
    # A lone child stays; a parent over budget is not used.
    assert [c.chunk_id for c in expand_parents(children[:2], parents, COUNTER, 200)] == [11, 5]
    assert [c.chunk_id for c in expand_parents(children, parents, COUNTER, 3)] == [11, 5, 12]


def test_every_page_gets_its_best_chunk_before_any_page_gets_a_second() -> None:
    ranked = [chunk(0, "alpha " * 50, source="a"), chunk(1, "alpha more " * 50, source="a"),
              chunk(2, "beta " * 50, source="b"), chunk(3, "gamma " * 50, source="c")]
    assert [c.chunk_id for c in pages_first(ranked)] == [0, 2, 3, 1]
    two = COUNTER.count(format_context(pack_budget([ranked[0], ranked[2]], 10_000, COUNTER), []))
    # The budget holds two whole entries and 40 tokens: the third page still gets in, cut to fit.
    packed = pack_budget(pages_first(ranked), two + 40, COUNTER)
    assert [c.source_id for c in packed] == ["a", "b", "c"]
    assert [c.truncated for c in packed] == [False, False, True]
    assert COUNTER.count(format_context(packed, [])) <= two + 40
