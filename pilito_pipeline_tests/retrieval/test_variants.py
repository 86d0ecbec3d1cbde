"""Persian vocabulary doublets on the query side (retrieval/variants.py, variants_fa.txt)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pilito_pipeline.retrieval.query import analyze_query
from pilito_pipeline.retrieval.variants import expand, load_groups, words


def test_the_shipped_list_loads_and_has_the_issue_doublets() -> None:
    groups = load_groups()
    assert len(groups) >= 20
    flat = {variant for group in groups for variant in group}
    for word in ("گذرواژه", "رمز عبور", "پسورد", "نمایشگر", "مانیتور", "صفحه نمایش", "رایانه", "کامپیوتر"):
        assert word in flat
    assert len(flat) == sum(len(group) for group in groups), "a variant sits in two groups"


@pytest.mark.parametrize(("query", "added", "not_added"), [
    ("چطور رمز عبورم را عوض کنم؟", "گذرواژه", "رمز عبور"),  # suffix on the last word
    ("پسوردم یادم رفته", "گذرواژه", "پسورد"),
    ("صفحه نمایش دوم را چگونه وصل کنم", "نمایشگر", "صفحه نمایش"),
    ("کامپیوترتان روشن نمی‌شود", "رایانه", "کامپیوتر"),
    ("تنظیم صفحه‌کلید", "کیبورد", "صفحه‌کلید"),  # ZWNJ compound
])
def test_a_variant_in_the_query_brings_the_others(query: str, added: str, not_added: str) -> None:
    expansion = expand(query)
    assert added in expansion.phrases and not_added not in expansion.phrases
    assert added in expansion.terms


def test_no_variant_no_expansion_and_parts_do_not_match() -> None:
    assert expand("شهریه دوره آیلتس چقدر است؟").phrases == ()
    assert expand("صفحه اصلی سایت").phrases == ()  # "صفحه" alone is not "صفحه نمایش"
    assert expand("رمزهای قدیمی").phrases == ()  # neither is "رمز" alone
    assert expand("ماوسیقی").phrases == ()  # a suffix outside the allowed ones


def test_analysis_expands_persian_and_mixed_queries_only() -> None:
    assert "گذرواژه" in analyze_query("رمز عبور را فراموش کرده‌ام").variant_terms
    assert analyze_query("I forgot my password").variant_terms == ()
    terms = analyze_query("پسورد وای‌فای").terms
    assert not set(analyze_query("پسورد وای‌فای").variant_terms) & set(terms)


def test_words_split_zwnj_and_lower_case() -> None:
    assert words("گذرواژه‌تان Password") == ("گذرواژه", "تان", "password")


def test_malformed_lists_are_refused(tmp_path: Path) -> None:
    single = tmp_path / "single.txt"
    single.write_text("# comment\nگذرواژه\n", encoding="utf-8")
    with pytest.raises(ValueError, match="single.txt:2"):
        load_groups(single)
    empty = tmp_path / "empty.txt"
    empty.write_text("گذرواژه | ؟\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no searchable word"):
        load_groups(empty)
    assert expand("key ring", [("کلید", "key")]).phrases == ("کلید",)
    assert expand("کلید نقره", [("کلید", "key")]).phrases == ()  # English variants are not added
