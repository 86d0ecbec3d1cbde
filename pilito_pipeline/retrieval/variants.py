"""Persian vocabulary doublets on the query side (گذرواژه / رمز عبور / پسورد, رایانه / کامپیوتر, …).

No maintained Persian synonym resource is installable offline (PyPI / Debian / npm carry spelling
dictionaries and stemmers, not synonym sets), so the groups are a small curated list,
`variants_fa.txt`. A variant matches when its words (normalised as at indexing, ZWNJ parts as
words) appear in a row among the query's words, each allowing a short Persian suffix (رمز عبورم,
کامپیوترتان). The query then gains the other variants of the group: their `text.tokenize` terms
for BM25, their text appended to what the dense arm embeds. Only Persian-script variants are added
(an English word in a Persian query brings the Persian ones; the reverse would add words a Persian
site rarely has).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
import re

from pilito_pipeline.text import normalize, tokenize

VARIANTS_FILE = Path(__file__).with_name("variants_fa.txt")
_WORD = re.compile(r"\w+")
_PERSIAN = re.compile("[\u0600-\u06ff]")
_SUFFIXES = ("", "م", "ت", "ش", "مان", "تان", "شان", "ی", "ها", "های", "ای")


@dataclass(frozen=True)
class Expansion:
    terms: tuple[str, ...]
    """BM25 terms of the variants the query did not contain."""
    phrases: tuple[str, ...]
    """Those variants as text (for the dense arm)."""


def load_groups(path: Path = VARIANTS_FILE) -> tuple[tuple[str, ...], ...]:
    """The variant groups of `path` (lines of " | "-separated variants; '#' starts a comment)."""
    groups = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        group = tuple(v.strip() for v in line.split("|") if v.strip())
        if len(group) < 2:
            raise ValueError(f"{path}:{number}: a group needs at least two variants")
        if any(not tokenize(v) for v in group):
            raise ValueError(f"{path}:{number}: a variant has no searchable word")
        groups.append(group)
    return tuple(groups)


def words(text: str) -> tuple[str, ...]:
    """Lower-cased words of the normalised text, ZWNJ-joined parts as separate words."""
    return tuple(_WORD.findall(normalize(text).replace("\u200c", " ").lower()))


@lru_cache(maxsize=1)
def _default_groups() -> tuple[tuple[tuple[str, tuple[str, ...]], ...], ...]:
    return _split(load_groups())


def _split(groups: Sequence[Sequence[str]]) -> tuple[tuple[tuple[str, tuple[str, ...]], ...], ...]:
    return tuple(tuple((v, words(v)) for v in group) for group in groups)


def _matches(tokens: Sequence[str], query: Sequence[str]) -> bool:
    n = len(tokens)
    return any(
        all(q.startswith(t) and q[len(t):] in _SUFFIXES for t, q in zip(tokens, query[i:i + n], strict=True))
        for i in range(len(query) - n + 1)
    )


def expand(query: str, groups: Sequence[Sequence[str]] | None = None) -> Expansion:
    """The variants to add to `query` (none when it contains no variant of any group)."""
    split = _default_groups() if groups is None else _split(groups)
    query_words = words(query)
    # A variant can only match where its first word is a query word less an allowed suffix.
    stems = {word[: len(word) - len(suffix)] for word in query_words for suffix in _SUFFIXES if word.endswith(suffix)}
    present = set(tokenize(query))
    new_terms: dict[str, None] = {}
    phrases: dict[str, None] = {}
    for group in split:
        found = {variant for variant, variant_words in group
                 if variant_words and variant_words[0] in stems and _matches(variant_words, query_words)}
        if not found:
            continue
        for variant, _ in group:
            if variant in found or not _PERSIAN.search(variant):
                continue
            phrases[variant] = None
            new_terms.update((t, None) for t in tokenize(variant) if t not in present)
    return Expansion(tuple(new_terms), tuple(phrases))
