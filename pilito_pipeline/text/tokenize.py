"""BM25 terms: normalised, Persian-aware, stop words removed.

Persian words are folded so that the spellings people actually use meet:
"کتاب", "کتاب‌ها", "کتاب ها", "کتابها", "کتابهای" all give the term "کتاب". Half-space compounds give
their parts and the joined form ("ثبت‌نام" → ثبت, نام, ثبتنام) so "ثبت نام" and "ثبتنام" both match.
Plural/comparative suffixes (ها های هایی تر ترین) are cut when at least three letters remain;
clitics after a half-space (ی ای ام اش ...) and the verb prefixes می/نمی are dropped.
English words lose a plural "s" ("scholarships" → "scholarship", "classes" → "class"; like
Porter's step 1a, so "ielts" becomes "ielt" on pages and in queries alike). Grouped numbers lose their
separators ("۱۸٬۵۰۰٬۰۰۰" → "18500000").
"""

from __future__ import annotations

import re

from pilito_pipeline.text.normalize import ZWNJ, normalize
from pilito_pipeline.text.stopwords import STOP_WORDS

_TOKEN = re.compile(rf"\d+(?:[.,]\d+)*|[^\W_]+(?:{ZWNJ}[^\W_]+)*")
_GROUPED_NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+|\d{1,3}(?:\.\d{3}){2,}")
_ARABIC_SCRIPT = re.compile(r"[\u0600-\u06ff]")
_ATTACHED_SUFFIXES = ("هایی", "های", "ها", "ترین", "تر")
_DETACHED_SUFFIXES = frozenset(
    {"ها", "های", "هایی", "تر", "ترین", "ی", "ای", "ام", "ات", "اش", "ایم", "اید", "اند", "مان", "تان", "شان"}
)
_VERB_PREFIXES = frozenset({"می", "نمی"})
_MIN_STEM_LETTERS = 3


def tokenize(text: str) -> list[str]:
    """Split `text` into BM25 terms (normalised, stemmed lightly, without stop words)."""
    terms: list[str] = []
    for match in _TOKEN.finditer(normalize(text)):
        token = match.group()
        if token[0].isdigit():
            terms.extend(_number_terms(token))
        elif _ARABIC_SCRIPT.match(token):
            terms.extend(_persian_terms(token))
        else:
            term = _english_term(token)
            if term:
                terms.append(term)
    return terms


def _number_terms(token: str) -> list[str]:
    if _GROUPED_NUMBER.fullmatch(token):
        return [token.replace(",", "").replace(".", "")]
    return [part for part in token.split(",") if part]


def _persian_terms(token: str) -> list[str]:
    parts = token.split(ZWNJ)
    if len(parts) > 1 and parts[0] in _VERB_PREFIXES:
        parts = parts[1:]
    parts = [parts[0], *(part for part in parts[1:] if part not in _DETACHED_SUFFIXES)]
    stems = [_strip_persian_suffix(part) for part in parts]
    terms = [stem for stem in stems if len(stem) > 1 and stem not in STOP_WORDS]
    if len(stems) > 1 and len(terms) > 1:
        terms.append("".join(stems))
    return terms


def _strip_persian_suffix(word: str) -> str:
    for suffix in _ATTACHED_SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= _MIN_STEM_LETTERS:
            return word[: -len(suffix)]
    return word


def _english_term(word: str) -> str | None:
    if len(word) < 2 or word in STOP_WORDS:
        return None
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith("sses"):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word
