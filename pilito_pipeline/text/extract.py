"""HTML → ExtractedDocument: main text without boilerplate, metadata and the block structure.

The cascade, in order, stopping at the first result with at least `min_main_text_chars`:
1. trafilatura, fast mode (precise main-content extraction, tables and lists kept);
2. trafilatura with `favor_recall` and its own readability/jusText fallbacks;
3. a DOM walk of <main>/<article>/<body> after dropping nav, header, footer, aside, forms and
   elements whose class/id says menu, cookie, sidebar and the like.
If none reaches that length, the longest result is kept when it has at least `min_document_chars`;
otherwise the page is dropped with an `ExtractionError` whose reason names every attempt.

trafilatura deletes the zero-width non-joiner (ZWNJ, the Persian half-space) as an unprintable
character, which would glue "می‌خواهند" into "میخواهند". Before extraction every ZWNJ in the tree is
swapped for a printable placeholder, and swapped back in the extracted text.
"""

from __future__ import annotations

import hashlib
import json
import re
from copy import deepcopy
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from lxml import etree
from lxml.html import HtmlElement
from trafilatura import bare_extraction
from trafilatura.utils import load_html

from pilito_pipeline.text.normalize import ZWNJ

BlockKind = Literal["heading", "paragraph", "list", "table"]
Language = Literal["fa", "en", "mixed"]

_ZWNJ_PLACEHOLDER = "\u2e2f"  # VERTICAL TILDE: printable, a letter, never used in Persian or English text
_WHITESPACE = re.compile(r"\s+")
_ALWAYS_BOILERPLATE_TAGS = ("nav", "aside", "form", "script", "style", "noscript", "iframe", "svg", "template")
_PAGE_FRAME_TAGS = ("header", "footer")
"""Boilerplate at page level; inside <article>/<main> they frame the article itself and stay."""
_BOILERPLATE_NAME = re.compile(
    r"(^|[-_ ])(nav|navbar|navigation|menu|cookies?|consent|sidebar|widgets?|footer|breadcrumbs?|social|"
    r"share|sharing|related|comments?|advert|ads|popup|modal|newsletter)($|[-_ ])",
    re.IGNORECASE,
)
_TEXT_TAGS = ("p", "blockquote", "pre", "dd", "dt", "figcaption", "address")
_HEADING_TAGS = ("h1", "h2", "h3", "h4", "h5", "h6")
_KEYWORD_SEPARATORS = re.compile(r"[,،;؛]")


@dataclass(frozen=True)
class Block:
    """One structural unit of the main text. Lists hold one "- item" line per item; tables one
    "cell | cell" line per row, header row first."""

    kind: BlockKind
    text: str
    level: int = 0
    """Heading level 1-6; 0 for other blocks."""


@dataclass
class ExtractedDocument:
    """What a page says, ready for chunking; JSON-serialisable via to_dict()/from_dict()."""

    url: str
    title: str
    text: str
    language: Language
    description: str
    keywords: list[str]
    h1: list[str]
    h2: list[str]
    blocks: list[Block] = field(default_factory=list)
    extractor: str = ""
    """Which step of the cascade produced the text (trafilatura, trafilatura_recall, dom)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExtractedDocument:
        fields = {**data, "blocks": [Block(**block) for block in data.get("blocks", [])]}
        return cls(**fields)


class ExtractionError(ValueError):
    """A page yields no usable main text; `reason` says why (it is also the message)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ExtractionOptions:
    """Every extraction threshold, in one place."""

    min_main_text_chars: int = 200
    """Below this the cascade tries its next step."""
    min_document_chars: int = 40
    """Below this after the whole cascade the page is dropped."""
    max_html_chars: int = 5_000_000
    mixed_language_share: float = 0.2
    """A document is "mixed" when the smaller script has at least this share of the letters."""


DEFAULT_EXTRACTION_OPTIONS = ExtractionOptions()


def extract_document(html: str, url: str, options: ExtractionOptions = DEFAULT_EXTRACTION_OPTIONS) -> ExtractedDocument:
    """Extract the main text and metadata of one page; raises ExtractionError with the reason."""
    if not html or not html.strip():
        raise ExtractionError("empty HTML")
    if len(html) > options.max_html_chars:
        raise ExtractionError(f"HTML too large: {len(html)} characters (limit {options.max_html_chars})")
    tree = load_html(html)
    if tree is None:
        raise ExtractionError("unparseable HTML")
    _protect_zwnj(tree)
    content = _without_boilerplate(tree)

    attempts: list[tuple[str, list[Block]]] = []
    for name, extractor in _CASCADE:
        blocks = extractor(content, url)
        attempts.append((name, blocks))
        if _text_length(blocks) >= options.min_main_text_chars:
            break
    name, blocks = max(reversed(attempts), key=lambda attempt: _text_length(attempt[1]))
    if _text_length(blocks) < options.min_document_chars:
        tried = ", ".join(f"{step}: {_text_length(found)} chars" for step, found in attempts)
        raise ExtractionError(f"no main text ({tried}; need {options.min_document_chars})")

    text = "\n\n".join(block.text for block in blocks)
    return ExtractedDocument(
        url=url,
        title=_title(tree) or next((b.text for b in blocks if b.kind == "heading"), ""),
        text=text,
        language=detect_language(text, options.mixed_language_share),
        description=_meta_content(tree, "description"),
        keywords=_keywords(tree),
        h1=_headings(content, "h1") or _headings(tree, "h1"),
        h2=_headings(content, "h2"),
        blocks=blocks,
        extractor=name,
    )


def document_hash(doc: ExtractedDocument) -> str:
    """SHA-256 of everything chunking reads (title, text blocks, headings, keywords, language).

    Equal hashes mean equal chunks, so an unchanged page can skip re-chunking and re-embedding.
    """
    payload = {key: value for key, value in doc.to_dict().items() if key not in ("url", "extractor")}
    encoded = json.dumps(payload, ensure_ascii=False, sort_keys=True).encode("utf-8")
    return hashlib.sha256(encoded).hexdigest()


def detect_language(text: str, mixed_share: float = DEFAULT_EXTRACTION_OPTIONS.mixed_language_share) -> Language:
    """"fa" for Arabic-script text, "en" for other scripts, "mixed" when both have a real share."""
    arabic = sum(1 for ch in text if "\u0600" <= ch <= "\u06ff" and ch.isalpha())
    other = sum(1 for ch in text if ch.isalpha()) - arabic
    total = arabic + other
    if total == 0:
        return "en"
    minority = min(arabic, other) / total
    if minority >= mixed_share:
        return "mixed"
    return "fa" if arabic > other else "en"


# --- the cascade -------------------------------------------------------------------------------


def _trafilatura_blocks(tree: HtmlElement, url: str, favor_recall: bool) -> list[Block]:
    document = bare_extraction(
        tree,
        url=url or None,
        fast=not favor_recall,
        favor_recall=favor_recall,
        include_comments=False,
        include_tables=True,
        include_formatting=False,
        include_links=False,
        include_images=False,
    )
    if document is None or document.body is None:
        return []
    return _blocks_from_trafilatura_body(document.body)


def _blocks_from_trafilatura_body(body: etree._Element) -> list[Block]:
    blocks: list[Block] = []
    for element in body:
        tag = element.tag
        if tag == "head":
            level = _heading_level(element.get("rend", ""), default=2)
            _append(blocks, Block("heading", _clean(_text_of(element)), level))
        elif tag in ("p", "quote", "code"):
            _append(blocks, Block("paragraph", _clean(_text_of(element))))
        elif tag == "list":
            _append(blocks, Block("list", _list_text(element.iter("item"))))
        elif tag == "table":
            _append(blocks, Block("table", _table_text(element.iter("row"), ("cell",))))
    return blocks


def _dom_blocks(root: HtmlElement, url: str) -> list[Block]:
    candidates = root.xpath("//main | //article | //*[@role='main']")
    main = candidates[0] if candidates else root
    blocks: list[Block] = []
    taken: set[etree._Element] = set()
    for element in main.iter(*_HEADING_TAGS, *_TEXT_TAGS, "ul", "ol", "table"):
        if any(ancestor in taken for ancestor in element.iterancestors()):
            continue
        tag = element.tag
        if tag in _HEADING_TAGS:
            _append(blocks, Block("heading", _clean(_text_of(element)), int(tag[1])))
        elif tag in _TEXT_TAGS:
            _append(blocks, Block("paragraph", _clean(_text_of(element))))
        elif tag in ("ul", "ol"):
            _append(blocks, Block("list", _list_text(element.iterchildren("li"))))
        else:
            _append(blocks, Block("table", _table_text(element.iter("tr"), ("td", "th"))))
        taken.add(element)
    return blocks


_CASCADE = (
    ("trafilatura", lambda tree, url: _trafilatura_blocks(tree, url, favor_recall=False)),
    ("trafilatura_recall", lambda tree, url: _trafilatura_blocks(tree, url, favor_recall=True)),
    ("dom", _dom_blocks),
)


# --- helpers -----------------------------------------------------------------------------------


def _protect_zwnj(tree: HtmlElement) -> None:
    for element in tree.iter():
        if element.text and ZWNJ in element.text:
            element.text = element.text.replace(ZWNJ, _ZWNJ_PLACEHOLDER)
        if element.tail and ZWNJ in element.tail:
            element.tail = element.tail.replace(ZWNJ, _ZWNJ_PLACEHOLDER)
        for name, value in element.attrib.items():
            if ZWNJ in value:
                element.set(name, value.replace(ZWNJ, _ZWNJ_PLACEHOLDER))


def _clean(text: str) -> str:
    return _WHITESPACE.sub(" ", text.replace(_ZWNJ_PLACEHOLDER, ZWNJ)).strip()


def _text_of(element: etree._Element) -> str:
    return " ".join(element.itertext())


def _append(blocks: list[Block], block: Block) -> None:
    if block.text:
        blocks.append(block)


def _list_text(items: Any) -> str:
    lines = (_clean(_text_of(item)) for item in items)
    return "\n".join(f"- {line}" for line in lines if line)


def _table_text(rows: Any, cell_tags: tuple[str, ...]) -> str:
    lines = []
    for row in rows:
        cells = [_clean(_text_of(cell)) for cell in row.iterchildren(*cell_tags)]
        if any(cells):
            lines.append(" | ".join(cells))
    return "\n".join(lines)


def _heading_level(rend: str, default: int) -> int:
    return int(rend[1]) if len(rend) == 2 and rend[0] == "h" and rend[1].isdigit() else default


def _text_length(blocks: list[Block]) -> int:
    return sum(len(block.text) for block in blocks if block.kind != "heading")


def _without_boilerplate(tree: HtmlElement) -> HtmlElement:
    """A copy of the page without navigation, sidebars, page header/footer, forms, cookie banners."""
    root = deepcopy(tree)
    doomed = list(root.iter(*_ALWAYS_BOILERPLATE_TAGS))
    doomed += [
        element
        for element in root.iter(*_PAGE_FRAME_TAGS)
        if not any(ancestor.tag in ("article", "main") for ancestor in element.iterancestors())
    ]
    doomed += [element for element in root.iter() if isinstance(element.tag, str) and _looks_like_boilerplate(element)]
    for element in doomed:
        if element.getparent() is not None:
            element.drop_tree()
    return root


def _looks_like_boilerplate(element: HtmlElement) -> bool:
    if element.tag in ("html", "body", "main", "article"):
        return False
    names = f"{element.get('class', '')} {element.get('id', '')} {element.get('role', '')}"
    return bool(names.strip()) and bool(_BOILERPLATE_NAME.search(names))


def _title(tree: HtmlElement) -> str:
    for xpath in ("//head/title", "//title"):
        found = tree.xpath(xpath)
        if found:
            title = _clean(_text_of(found[0]))
            if title:
                return title
    return _meta_content(tree, "og:title")


def _meta_content(tree: HtmlElement, name: str) -> str:
    for meta in tree.iter("meta"):
        key = (meta.get("name") or meta.get("property") or "").strip().lower()
        if key in (name, f"og:{name}"):
            content = _clean(meta.get("content") or "")
            if content:
                return content
    return ""


def _keywords(tree: HtmlElement) -> list[str]:
    keywords: list[str] = []
    for keyword in _KEYWORD_SEPARATORS.split(_meta_content(tree, "keywords")):
        keyword = keyword.strip()
        if keyword and keyword not in keywords:
            keywords.append(keyword)
    return keywords


def _headings(tree: HtmlElement, tag: str) -> list[str]:
    headings: list[str] = []
    for element in tree.iter(tag):
        if any(ancestor.tag in ("nav", "footer", "aside") for ancestor in element.iterancestors()):
            continue
        text = _clean(_text_of(element))
        if text and text not in headings:
            headings.append(text)
    return headings
