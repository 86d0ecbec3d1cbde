"""Sentence and clause splitting for Persian, English and mixed text, and a token estimate.

Sentences end at . ! ? … and the Persian ؟ and at ; ؛ and line breaks, when whitespace follows
(so "8.5", "۱۸٬۵۰۰" and "info@site.example" stay whole). Clauses end at , ، and : and are only used
to cut a sentence that is too long on its own.
"""

from __future__ import annotations

import re

_SENTENCE_BOUNDARY = re.compile(r"(?<=[.!?؟؛;…])\s+|(?<=[.!?؟؛;…][\"'»”’)\]])\s+|\s*\n\s*")
_CLAUSE_BOUNDARY = re.compile(r"(?<=[،,:])\s+")
_TOKEN_UNIT = re.compile(r"\w+(?:\u200c\w+)*|[^\w\s\u200c]")


def split_sentences(text: str) -> list[str]:
    """The sentences of `text`, stripped, in order, none empty."""
    return [part.strip() for part in _SENTENCE_BOUNDARY.split(text) if part and part.strip()]


def split_clauses(sentence: str) -> list[str]:
    """The comma/colon clauses of one sentence (Persian ، included)."""
    return [part.strip() for part in _CLAUSE_BOUNDARY.split(sentence) if part.strip()]


def estimate_tokens(text: str) -> int:
    """Model-independent size measure: words (half-space compounds count once) plus punctuation marks."""
    return len(_TOKEN_UNIT.findall(text))
