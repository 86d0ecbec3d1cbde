"""Spoken Persian written formally (text/informal.py), rule by rule."""

from __future__ import annotations

import pytest

from pilito_pipeline.text.informal import formalize

ZWNJ = "\u200c"


@pytest.mark.parametrize(("spoken", "written"), [
    ("میشه", f"می{ZWNJ}شود"),                    # spoken stem ش → شو, 3sg ه → د
    ("نمیشه", f"نمی{ZWNJ}شود"),
    ("نمیتونم", f"نمی{ZWNJ}توانم"),              # تون → توان, with or without the half-space
    (f"می{ZWNJ}خوام", f"می{ZWNJ}خواهم"),
    ("میدونین", f"می{ZWNJ}دانید"),               # 2pl ین → ید
    ("میگن", f"می{ZWNJ}گویند"),                  # گ → گوی, 3pl ن → ند
    ("میکنه", f"می{ZWNJ}کند"),
    ("بشم", "بشوم"),                               # subjunctive with a spoken stem
    ("بذارم", "بگذارم"),
    ("چجوری", "چگونه"),
    ("کجاس", "کجاست"),
    ("داره", "دارد"),
    ("اینو", "این را"),
])
def test_spoken_words_are_written_formally(spoken: str, written: str) -> None:
    result = formalize(spoken)
    assert result.text == written and result.changed


@pytest.mark.parametrize("word", [
    "میز", "میزان", "بدنه", f"می{ZWNJ}شود", f"می{ZWNJ}دهد", f"می{ZWNJ}کنید", "کتاب", "printer", "سرور",
])
def test_written_words_and_look_alikes_stay(word: str) -> None:
    result = formalize(word)
    assert result.text == word and not result.changed


def test_a_whole_question_and_the_clitic_noun() -> None:
    result = formalize("چطوری فایلو تو پرینتر پرینت کنم؟ نمیشه")
    assert result.text == f"چگونه فایلو در پرینتر پرینت کنم؟ نمی{ZWNJ}شود"
    # «فایلو» may be «فایل را» or a noun ending in و: the noun is offered as an extra search word.
    assert result.extra_words == ("فایل",)


def test_normalises_like_indexing() -> None:
    assert formalize("ميشه").text == f"می{ZWNJ}شود"  # Arabic yeh folded first
    assert formalize("").text == ""


@pytest.mark.parametrize(("spoken", "stem"), [
    ("سرورای", "سرور"),      # spoken plural ای (سرورهای)
    ("کارمندا", "کارمند"),    # spoken plural ا
    ("پروکسیه", "پروکسی"),   # ه for است
    ("پاکشون", "پاک"),        # spoken possessive شون
    ("عکسرو", "عکس"),         # object clitic رو
])
def test_spoken_endings_offer_the_stem_without_rewriting(spoken: str, stem: str) -> None:
    result = formalize(f"این {spoken}")
    assert result.extra_words == (stem,) and spoken in result.text
