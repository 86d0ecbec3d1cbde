"""normalize() and tokenize(): every folding rule, table-driven, on real Persian and mixed text."""

from __future__ import annotations

import pytest

from pilito_pipeline.text import normalize, tokenize
from pilito_pipeline.text.stopwords import ENGLISH_STOP_WORDS, PERSIAN_STOP_WORDS

Z = "\u200c"  # ZWNJ, the Persian half-space

NORMALIZE_CASES = [
    # Arabic letters → Persian
    ("arabic yeh", "علي", "علی"),
    ("alef maksura", "موسى", "موسی"),
    ("arabic kaf", "كتاب", "کتاب"),
    ("whole sentence with ي ك", "كلاس‌هاي زبان انگليسي كودكان", f"کلاس{Z}های زبان انگلیسی کودکان"),
    ("teh marbuta", "مدرسة", "مدرسه"),
    ("heh with yeh above (ezafe)", "خانۀ ما", "خانه ما"),
    ("heh doachashmee", "ھفته", "هفته"),
    ("alef with hamza above", "تأثیر", "تاثیر"),
    ("alef with hamza below", "إسلام", "اسلام"),
    ("waw with hamza", "مسؤول", "مسوول"),
    ("stray hamza dropped", "اجزاء", "اجزا"),
    ("alef madda kept", "آموزشگاه", "آموزشگاه"),
    ("yeh with hamza kept", "مسئول", "مسئول"),
    ("presentation forms folded", "ﻛﺘﺎﺏ", "کتاب"),
    # diacritics and kashida
    ("harakat removed", "بِسْمِ اللّهِ", "بسم الله"),
    ("tanwin removed", "معمولاً", "معمولا"),
    ("kashida removed", "کشیــــده", "کشیده"),
    # digits
    ("persian digits", "۱۲۳۴۵۶۷۸۹۰", "1234567890"),
    ("arabic-indic digits", "٤٥٦", "456"),
    ("arabic thousands separator", "۱۸٬۵۰۰٬۰۰۰ تومان", "18,500,000 تومان"),
    ("arabic decimal separator", "نمره ۸٫۵", "نمره 8.5"),
    # zero-width characters and spaces
    ("zwnj kept between letters", f"می{Z}خواهند", f"می{Z}خواهند"),
    ("double zwnj collapsed", f"کتاب{Z}{Z}ها", f"کتاب{Z}ها"),
    ("zwnj next to a space dropped", f"کتاب{Z} ها", f"کتاب{Z}ها"),
    ("zwnj at word end dropped", f"کتاب{Z}", "کتاب"),
    ("zwj and zwsp removed", "کتاب\u200dها\u200b", "کتابها"),
    ("bidi marks removed", "\u200fسلام\u202a world\u202c", "سلام world"),
    ("nbsp and thin space", "شهریه\u00a0دوره\u2009آیلتس", "شهریه دوره آیلتس"),
    ("space runs collapsed", "  دوره   زبان  ", "دوره زبان"),
    ("blank lines kept as paragraph break", "یک\n\n\n\nدو", "یک\n\nدو"),
    # half-space repair
    ("mi prefix joined", "می توانید", f"می{Z}توانید"),
    ("nemi prefix joined", "نمی شود", f"نمی{Z}شود"),
    ("ha suffix joined", "کتاب ها", f"کتاب{Z}ها"),
    ("haye suffix joined", "کلاس های آنلاین", f"کلاس{Z}های آنلاین"),
    ("tarin suffix joined", "بزرگ ترین", f"بزرگ{Z}ترین"),
    ("word that merely starts with ha untouched", "این هفته", "این هفته"),
    # punctuation and case
    ("space before persian question mark", "چقدر است ؟", "چقدر است؟"),
    ("space before comma", "شنبه ، دوشنبه", "شنبه، دوشنبه"),
    ("english lower-cased", "IELTS Academic", "ielts academic"),
    ("full-width latin folded", "ＩＥＬＴＳ", "ielts"),
    ("mixed sentence", "نمره IELTS شما  ۷  است .", "نمره ielts شما 7 است."),
    ("empty", "", ""),
]


@pytest.mark.parametrize(("case", "raw", "expected"), NORMALIZE_CASES, ids=[c[0] for c in NORMALIZE_CASES])
def test_normalize(case: str, raw: str, expected: str) -> None:
    assert normalize(raw) == expected


@pytest.mark.parametrize(("case", "raw", "expected"), NORMALIZE_CASES, ids=[c[0] for c in NORMALIZE_CASES])
def test_normalize_is_idempotent(case: str, raw: str, expected: str) -> None:
    assert normalize(normalize(raw)) == normalize(raw)


TOKENIZE_CASES = [
    ("plural spellings meet", "کتاب کتاب‌ها کتاب ها کتابها کتابهای کتاب‌های", ["کتاب"] * 6),
    ("arabic letters meet persian", "كتاب‌هاي", ["کتاب"]),
    ("comparative and superlative", "ارزان‌تر ارزانترین", ["ارزان", "ارزان"]),
    ("short words keep their ending", "دختر بهتر", ["دختر", "بهتر"]),
    ("clitic after half-space", "خانه‌ای دوره‌ام", ["خانه", "دوره"]),
    ("verb prefix dropped", "می‌توانید نمی‌دانم", ["توانید", "دانم"]),
    ("verb prefix with a plain space", "می توانید", ["توانید"]),
    ("compound gives parts and joined form", "ثبت‌نام", ["ثبت", "نام", "ثبتنام"]),
    ("compound written with a space", "ثبت نام", ["ثبت", "نام"]),
    ("persian question words and verbs dropped", "شهریه دوره آیلتس چقدر است؟", ["شهریه", "دوره", "آیلتس"]),
    ("english stop words and plural", "Do you offer scholarships?", ["offer", "scholarship"]),
    ("english ies plural", "Courses and facilities", ["course", "facility"]),
    ("english words ending in ss kept", "class business classes", ["class", "business", "class"]),
    ("acronyms fold like words", "IELTS ielts", ["ielt", "ielt"]),
    ("grouped persian number", "۱۸٬۵۰۰٬۰۰۰ تومان", ["18500000", "تومان"]),
    ("grouped latin number", "18,500,000", ["18500000"]),
    ("dotted grouping", "18.500.000", ["18500000"]),
    ("decimal kept", "نمره ۶٫۵", ["نمره", "6.5"]),
    ("list of numbers split", "1,2,3", ["1", "2", "3"]),
    ("email split into words", "info@avayeno.example", ["info", "avayeno", "example"]),
    ("mixed text", "دوره TOEFL آکادمیک", ["دوره", "toefl", "آکادمیک"]),
    ("diacritics do not matter", "مُعَلِّم", ["معلم"]),
    ("only stop words", "و در به از که", []),
    ("empty", "", []),
]


@pytest.mark.parametrize(("case", "raw", "expected"), TOKENIZE_CASES, ids=[c[0] for c in TOKENIZE_CASES])
def test_tokenize(case: str, raw: str, expected: list[str]) -> None:
    assert tokenize(raw) == expected


def test_query_and_page_spellings_share_terms() -> None:
    page = "كلاس هاي زبان انگليسي كودكان: شهريه هر ترم ٤٬٥٠٠٬٠٠٠ تومان است."
    query = "شهریه کلاس‌های کودکان چند تومان است؟ 4500000"
    assert {"کلاس", "کودکان", "شهریه", "4500000", "تومان"} <= set(tokenize(page)) & set(tokenize(query))


def test_stop_words_are_stored_normalised() -> None:
    assert all(normalize(word) == word for word in PERSIAN_STOP_WORDS)
    assert all(word == word.lower() for word in ENGLISH_STOP_WORDS)
    assert {"و", "است", "چقدر", "آیا"} <= PERSIAN_STOP_WORDS
    assert "شهریه" not in PERSIAN_STOP_WORDS
