"""Query analysis: language and normalisation/terms exactly as at indexing (text/), complexity,
and for Persian or mixed queries the written form of spoken Persian (`text.informal`) and the
vocabulary variants they could also be written with."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pilito_pipeline.retrieval.variants import expand
from pilito_pipeline.text import detect_language, normalize, tokenize
from pilito_pipeline.text.informal import formalize

Language = Literal["fa", "en", "mixed"]
Complexity = Literal["simple", "complex"]

_QUESTION_MARKS = re.compile(r"[?؟]")
_SENTENCE_END = re.compile(r"[.!?؟؛;]\s+\S")
# Words that join two asks in one message ("... and ...", "... و ...", "also", "همچنین").
_JOINERS = re.compile(r"(?:^|\s)(?:and|also|plus|versus|vs|compare|و|همچنین|یا|مقایسه)(?:\s|$)", re.IGNORECASE)

COMPLEX_MIN_TERMS = 9


@dataclass(frozen=True)
class QueryAnalysis:
    text: str
    normalized: str
    terms: tuple[str, ...]
    """BM25 terms, exactly as `text.tokenize` indexes chunk text."""
    language: Language
    complexity: Complexity
    variant_terms: tuple[str, ...] = ()
    """BM25 terms of the doublet variants the query did not use (`retrieval/variants.py`)."""
    variant_phrases: tuple[str, ...] = ()
    """Those variants as text."""
    formal: str = ""
    """The normalised query with spoken Persian written formally (`text.informal`); the
    normalised query itself when no rule applied or the query is English."""
    formal_terms: tuple[str, ...] = ()
    """BM25 terms of the stems of words with spoken endings (`text.informal`) not in `terms`."""

    def to_dict(self) -> dict[str, object]:
        return {"language": self.language, "complexity": self.complexity, "terms": list(self.terms),
                "variant_terms": list(self.variant_terms)}


def classify_complexity(normalized: str, terms: tuple[str, ...]) -> Complexity:
    """'complex' for multi-part questions: several questions or sentences, joined asks, many terms."""
    asks = len(_QUESTION_MARKS.findall(normalized)) + len(_SENTENCE_END.findall(normalized))
    if asks >= 2 or len(terms) >= COMPLEX_MIN_TERMS:
        return "complex"
    if _JOINERS.search(normalized) and len(terms) >= 5:
        return "complex"
    return "simple"


def analyze_query(query: str) -> QueryAnalysis:
    if not query or not query.strip():
        raise ValueError("query must not be empty")
    normalized = normalize(query)
    terms = tuple(dict.fromkeys(tokenize(query)))
    language = detect_language(normalized)
    variants = expand(query) if language != "en" else None
    formal = formalize(query) if language != "en" else None
    formal_terms = ()
    if formal is not None:
        extra = tokenize(" ".join(formal.extra_words))
        formal_terms = tuple(t for t in dict.fromkeys(extra) if t not in terms)
    return QueryAnalysis(
        text=query,
        normalized=normalized,
        terms=terms,
        language=language,
        complexity=classify_complexity(normalized, terms),
        variant_terms=variants.terms if variants else (),
        variant_phrases=variants.phrases if variants else (),
        formal=formal.text if formal is not None else normalized,
        formal_terms=formal_terms,
    )
