"""Structure-aware parent/child chunking with a TL;DR per chunk.

A document is cut into sections at its h1/h2 headings. Consecutive sections merge only when one of
them is tiny (below `tiny_section_tokens`) and together they still fit one child; a heading with no
text of its own always joins the section after it. Each (merged) section becomes a parent chunk,
split into several parents only when longer than `parent_max_tokens`. Each parent is cut into child
chunks of about `child_target_tokens` at sentence boundaries (list items and table rows are units
too), each child repeating the last `child_overlap_tokens` worth of sentences of the one before.
Sentences longer than a child are cut at clause marks (، , :) and, failing that, between words.

Layout: for each parent, the parent comes first and then its children, numbered 0..n-1 in document
order, so `chunk_index` is stable for unchanged input. Children point to their parent through
`parent_chunk_index`; parents are the context handed to the chat model, children are matched.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pilito_pipeline.text.extract import Block, ExtractedDocument, detect_language
from pilito_pipeline.text.sentences import estimate_tokens, split_clauses, split_sentences
from pilito_pipeline.text.tldr import make_tldr

_SECTION_PATH_SEPARATOR = " › "
_MERGED_TITLE_SEPARATOR = " / "


@dataclass(frozen=True)
class Chunk:
    """One row of the knowledge table, before embedding."""

    chunk_index: int
    text: str
    tldr: str
    section_title: str
    word_count: int
    is_parent: bool
    parent_chunk_index: int | None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ChunkingOptions:
    """Every chunking size, in one place (sizes are `estimate_tokens` units)."""

    child_target_tokens: int = 120
    child_overlap_tokens: int = 24
    parent_max_tokens: int = 480
    tiny_section_tokens: int = 20
    tldr_max_words: int = 100

    def __post_init__(self) -> None:
        if self.child_target_tokens < 1 or self.tldr_max_words < 1:
            raise ValueError("child_target_tokens and tldr_max_words must be positive")
        if not 0 <= self.child_overlap_tokens < self.child_target_tokens:
            raise ValueError("child_overlap_tokens must be at least 0 and below child_target_tokens")
        if self.parent_max_tokens < self.child_target_tokens:
            raise ValueError("parent_max_tokens must be at least child_target_tokens")


DEFAULT_CHUNKING_OPTIONS = ChunkingOptions()


def chunk_document(doc: ExtractedDocument, options: ChunkingOptions = DEFAULT_CHUNKING_OPTIONS) -> list[Chunk]:
    """Parents and children of one web page, with the page's metadata on every chunk."""
    first_h1 = next((b.text for b in doc.blocks if b.kind == "heading" and b.level == 1), None)
    page_heading = first_h1 or (doc.h1[0] if doc.h1 else doc.title)
    metadata = {
        "url": doc.url,
        "title": doc.title,
        "description": doc.description,
        "keywords": list(doc.keywords),
        "h1": list(doc.h1),
        "h2": list(doc.h2),
        "language": doc.language,
    }
    return _build_chunks(_sections(doc.blocks, options), page_heading, metadata, options)


def chunk_manual_text(title: str, text: str, options: ChunkingOptions = DEFAULT_CHUNKING_OPTIONS) -> list[Chunk]:
    """Chunks for a manual entry: `text` may use blank lines, "#" headings and "-"/"1." list items."""
    title, text = title.strip(), text.strip()
    if not title:
        raise ValueError("a manual entry needs a title")
    if not text:
        raise ValueError(f"manual entry {title!r} has no text")
    metadata = {"title": title, "language": detect_language(text)}
    return _build_chunks(_sections(blocks_from_plain_text(text), options), title, metadata, options)


def chunk_faq(question: str, answer: str, options: ChunkingOptions = DEFAULT_CHUNKING_OPTIONS) -> list[Chunk]:
    """Chunks for one FAQ entry; every chunk starts with the question so it matches on its own."""
    question, answer = " ".join(question.split()), answer.strip()
    if not question:
        raise ValueError("an FAQ entry needs a question")
    if not answer:
        raise ValueError(f"FAQ entry {question!r} has no answer")
    units = [unit for block in blocks_from_plain_text(answer) for unit in _units(block, options)]
    metadata = {"title": question, "question": question, "language": detect_language(f"{question} {answer}")}
    prefix = _Unit(question, estimate_tokens(question), "\n", is_heading=True)
    return _build_chunks([_Section([], units)], question, metadata, options, prefix=prefix)


_MARKDOWN_HEADING = re.compile(r"^(#{1,6})\s+(.+)$")
_LIST_ITEM = re.compile(r"^(?:[-*•]|\d+[.)]|[۰-۹]+[.)])\s+(.+)$")


def blocks_from_plain_text(text: str) -> list[Block]:
    """Blocks of plain or light-markdown text: "#" headings, list items, blank-line paragraphs."""
    blocks: list[Block] = []
    paragraph: list[str] = []
    items: list[str] = []

    def flush() -> None:
        if paragraph:
            blocks.append(Block("paragraph", " ".join(paragraph)))
            paragraph.clear()
        if items:
            blocks.append(Block("list", "\n".join(f"- {item}" for item in items)))
            items.clear()

    for raw_line in text.splitlines():
        line = " ".join(raw_line.split())
        heading, item = _MARKDOWN_HEADING.match(line), _LIST_ITEM.match(line)
        if not line:
            flush()
        elif heading:
            flush()
            blocks.append(Block("heading", heading.group(2), len(heading.group(1))))
        elif item:
            if paragraph:
                flush()
            items.append(item.group(1))
        else:
            if items:
                flush()
            paragraph.append(line)
    flush()
    return blocks


# --- sections and units ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Unit:
    """The smallest piece a chunk boundary may fall between: a sentence, list item, row or heading."""

    text: str
    tokens: int
    joiner: str
    """What separates it from the unit before: " " inside a paragraph, "\\n" between blocks."""
    is_heading: bool = False


@dataclass
class _Section:
    titles: list[str]
    """Its h1/h2 heading, or several when tiny sections were merged; empty before the first heading."""
    units: list[_Unit]

    @property
    def tokens(self) -> int:
        return sum(unit.tokens for unit in self.units)

    @property
    def content_tokens(self) -> int:
        return sum(unit.tokens for unit in self.units if not unit.is_heading)


def _sections(blocks: Sequence[Block], options: ChunkingOptions) -> list[_Section]:
    """h1/h2 sections; heading-only sections join the next; tiny neighbours merge."""
    raw: list[_Section] = []
    for block in blocks:
        if block.kind == "heading" and block.level <= 2:
            raw.append(_Section([block.text], []))
            continue
        if not raw:
            raw.append(_Section([], []))
        raw[-1].units.extend(_units(block, options))

    sections: list[_Section] = []
    pending_headings: list[_Unit] = []
    for section in raw:
        for title in section.titles:
            section.units.insert(0, _Unit(title, estimate_tokens(title), "\n", is_heading=True))
        if section.content_tokens == 0:
            pending_headings.extend(section.units)
            continue
        section.units[:0] = pending_headings
        pending_headings = []
        if sections and _should_merge(sections[-1], section, options):
            previous = sections[-1]
            sections[-1] = _Section(previous.titles + section.titles, previous.units + section.units)
        else:
            sections.append(section)
    return sections


def _should_merge(previous: _Section, section: _Section, options: ChunkingOptions) -> bool:
    tiny = min(previous.content_tokens, section.content_tokens) < options.tiny_section_tokens
    return tiny and previous.tokens + section.tokens <= options.child_target_tokens


def _units(block: Block, options: ChunkingOptions) -> list[_Unit]:
    if block.kind == "heading":
        return [_Unit(block.text, estimate_tokens(block.text), "\n", is_heading=True)]
    if block.kind == "paragraph":
        pieces = [piece for sentence in split_sentences(block.text) for piece in _fit(sentence, options)]
    else:
        pieces = [piece for line in block.text.splitlines() if line.strip() for piece in _fit(line.strip(), options)]
    paragraph_joiner = " " if block.kind == "paragraph" else "\n"
    return [
        _Unit(piece, estimate_tokens(piece), "\n" if position == 0 else paragraph_joiner)
        for position, piece in enumerate(pieces)
    ]


def _fit(sentence: str, options: ChunkingOptions) -> list[str]:
    """`sentence`, or its clauses, or word runs: pieces no longer than one child."""
    limit = options.child_target_tokens
    if estimate_tokens(sentence) <= limit:
        return [sentence]
    pieces: list[str] = []
    for clause in split_clauses(sentence):
        if estimate_tokens(clause) <= limit:
            pieces.append(clause)
            continue
        run: list[str] = []
        for word in clause.split():
            if run and estimate_tokens(" ".join([*run, word])) > limit:
                pieces.append(" ".join(run))
                run = []
            run.append(word)
        if run:
            pieces.append(" ".join(run))
    return _rejoin_small(pieces, limit)


def _rejoin_small(pieces: list[str], limit: int) -> list[str]:
    """Glue neighbouring clauses back together while they fit, so clause cuts stay rare."""
    joined: list[str] = []
    for piece in pieces:
        if joined and estimate_tokens(f"{joined[-1]} {piece}") <= limit:
            joined[-1] = f"{joined[-1]} {piece}"
        else:
            joined.append(piece)
    return joined


# --- packing -----------------------------------------------------------------------------------


def _pack(units: Sequence[_Unit], limit: int, overlap_tokens: int) -> list[list[_Unit]]:
    """Consecutive runs of units of at most `limit` tokens (plus overlap), never ending on a heading."""
    if sum(unit.tokens for unit in units) <= limit:
        return [list(units)]
    runs: list[list[_Unit]] = []
    current: list[_Unit] = []
    fresh = 0  # units in `current` that are not overlap from the previous run
    for unit in units:
        trailing_headings = _trailing_headings(current)
        if fresh > trailing_headings and _tokens(current) + unit.tokens > limit:
            cut = len(current) - trailing_headings
            runs.append(current[:cut])
            current = _overlap(current[:cut], overlap_tokens) + current[cut:]
            fresh = trailing_headings
        current.append(unit)
        fresh += 1
    if fresh:
        runs.append(current)
    return runs


def _trailing_headings(units: Sequence[_Unit]) -> int:
    count = 0
    for unit in reversed(units):
        if not unit.is_heading:
            break
        count += 1
    return count


def _overlap(run: Sequence[_Unit], budget: int) -> list[_Unit]:
    """The trailing sentences of `run` worth at most `budget` tokens (never all of it, no headings)."""
    tail: list[_Unit] = []
    for unit in reversed(run[1:]):
        if unit.is_heading or _tokens(tail) + unit.tokens > budget:
            break
        tail.insert(0, unit)
    return tail


def _tokens(units: Iterable[_Unit]) -> int:
    return sum(unit.tokens for unit in units)


def _render(units: Sequence[_Unit]) -> str:
    """Units joined by their joiners; a heading always ends its line."""
    parts = [units[0].text]
    for previous, unit in zip(units, units[1:]):
        parts.append("\n" if previous.is_heading else unit.joiner)
        parts.append(unit.text)
    return "".join(parts)


def _build_chunks(
    sections: Sequence[_Section],
    page_heading: str,
    metadata: dict[str, Any],
    options: ChunkingOptions,
    prefix: _Unit | None = None,
) -> list[Chunk]:
    layout: list[tuple[list[_Unit], str, int | None]] = []  # (units, section title, parent position)
    for section in sections:
        title = _section_path(page_heading, section.titles)
        for parent_units in _pack(section.units, options.parent_max_tokens, 0):
            parent_position = len(layout)
            layout.append((_with_prefix(prefix, parent_units), title, None))
            for child_units in _pack(parent_units, options.child_target_tokens, options.child_overlap_tokens):
                layout.append((_with_prefix(prefix, child_units), title, parent_position))

    tldr_cache: dict[str, str] = {}
    chunks = []
    for index, (units, title, parent) in enumerate(layout):
        text = _render(units)
        if text not in tldr_cache:
            tldr_cache[text] = make_tldr(text, options.tldr_max_words)
        chunks.append(
            Chunk(
                chunk_index=index,
                text=text,
                tldr=tldr_cache[text],
                section_title=title,
                word_count=len(text.split()),
                is_parent=parent is None,
                parent_chunk_index=parent,
                metadata={
                    **metadata,
                    "section_title": title,
                    "chunk_index": index,
                    "total_chunks": len(layout),
                },
            )
        )
    return chunks


def _with_prefix(prefix: _Unit | None, units: list[_Unit]) -> list[_Unit]:
    if prefix is None or (units and units[0].text == prefix.text):
        return units
    return [prefix, *units]


def _section_path(page_heading: str, titles: Sequence[str]) -> str:
    """"Page heading › section heading(s)", or just the page heading for its opening section."""
    own = _MERGED_TITLE_SEPARATOR.join(title for title in titles if title != page_heading)
    if not own:
        return page_heading
    return f"{page_heading}{_SECTION_PATH_SEPARATOR}{own}" if page_heading else own
