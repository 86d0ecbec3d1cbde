"""Extractive TL;DR: the most representative sentences of a text, in their original order."""

from __future__ import annotations

from collections import Counter

from pilito_pipeline.text.sentences import split_sentences
from pilito_pipeline.text.tokenize import tokenize

_FIRST_SENTENCE_BONUS = 1.5
_MIN_CANDIDATE_WORDS = 3


def make_tldr(text: str, max_words: int = 100) -> str:
    """At most `max_words` words: the whole text when short, else its most representative sentences.

    SumBasic selection over `tokenize` terms (so Persian affixes, half-spaces and stop words are
    handled): a sentence scores the mean probability of its distinct terms in the whole text, the
    opening sentence gets a bonus; after each pick the picked terms' probabilities are squared so
    the next pick says something new. Picks stop when nothing else fits; they are printed in
    document order. If even the best sentence is too long, it is cut to `max_words` words.
    """
    if max_words < 1:
        raise ValueError(f"max_words must be at least 1, got {max_words}")
    words = text.split()
    if len(words) <= max_words:
        return " ".join(words)

    sentences = [" ".join(sentence.split()) for sentence in split_sentences(text)]
    candidates = {
        position: set(terms)
        for position, sentence in enumerate(sentences)
        if len(sentence.split()) >= _MIN_CANDIDATE_WORDS and (terms := tokenize(sentence))
    }
    if not candidates:
        return " ".join(words[:max_words])
    counts = Counter(term for terms in candidates.values() for term in terms)
    total = sum(counts.values())
    probability = {term: count / total for term, count in counts.items()}

    def score(position: int) -> float:
        terms = candidates[position]
        mean = sum(probability[term] for term in terms) / len(terms)
        return mean * (_FIRST_SENTENCE_BONUS if position == 0 else 1.0)

    chosen: list[int] = []
    budget = max_words
    remaining = set(candidates)
    while remaining:
        fitting = [position for position in remaining if len(sentences[position].split()) <= budget]
        if not fitting:
            break
        best = max(fitting, key=lambda position: (score(position), -position))
        chosen.append(best)
        budget -= len(sentences[best].split())
        remaining.discard(best)
        for term in candidates[best]:
            probability[term] **= 2
    if not chosen:
        best = max(candidates, key=lambda position: (score(position), -position))
        return " ".join(sentences[best].split()[:max_words])
    return " ".join(sentences[position] for position in sorted(chosen))
