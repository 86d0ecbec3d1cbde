"""Extractive TL;DR: the most representative sentences of a text, in their original order."""

from __future__ import annotations

import math
from collections import Counter

from pilito_pipeline.text.sentences import split_sentences
from pilito_pipeline.text.tokenize import tokenize

_FIRST_SENTENCE_BONUS = 1.5
_MIN_CANDIDATE_WORDS = 3


def make_tldr(text: str, max_words: int = 100) -> str:
    """At most `max_words` words: the whole text when short, else its best-scoring sentences.

    A sentence scores by how frequent its distinct terms are in the whole text (terms from
    `tokenize`, so Persian affixes and stop words are handled), damped by its length, with a bonus
    for the opening sentence. Sentences are chosen greedily by score while they fit, then printed in
    document order. If even the best sentence is too long, it is cut to `max_words` words.
    """
    if max_words < 1:
        raise ValueError(f"max_words must be at least 1, got {max_words}")
    words = text.split()
    if len(words) <= max_words:
        return " ".join(words)

    sentences = [" ".join(sentence.split()) for sentence in split_sentences(text)]
    frequencies = Counter(tokenize(text))
    scored = []
    for position, sentence in enumerate(sentences):
        terms = set(tokenize(sentence))
        if len(sentence.split()) < _MIN_CANDIDATE_WORDS or not terms:
            continue
        score = sum(frequencies[term] for term in terms) / math.log2(2 + len(terms))
        if position == 0:
            score *= _FIRST_SENTENCE_BONUS
        scored.append((score, position))
    if not scored:
        return " ".join(words[:max_words])

    chosen: list[int] = []
    budget = max_words
    for _, position in sorted(scored, key=lambda item: (-item[0], item[1])):
        size = len(sentences[position].split())
        if size <= budget:
            chosen.append(position)
            budget -= size
    if not chosen:
        best = max(scored, key=lambda item: (item[0], -item[1]))[1]
        return " ".join(sentences[best].split()[:max_words])
    return " ".join(sentences[position] for position in sorted(chosen))
