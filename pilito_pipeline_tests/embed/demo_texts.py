"""Real Persian and English text for the embedding tests and benchmark: the bundled demo site's
child chunks (extracted and chunked by the pipeline itself), and ~400-character chunks packed
from their words (the size of a production Persian child chunk)."""

from __future__ import annotations

from functools import cache

from pilito_pipeline.app.demo import SITE_DIR
from pilito_pipeline.text.chunking import chunk_document
from pilito_pipeline.text.extract import ExtractionError, detect_language, extract_document


@cache
def demo_child_chunks(language: str) -> tuple[str, ...]:
    """The text of every child chunk of the demo site detected as `language` ("fa" or "en")."""
    chunks: list[str] = []
    for page in sorted(SITE_DIR.rglob("*.html")):
        try:
            html = page.read_text(encoding="utf-8")
            document = extract_document(html, f"http://127.0.0.1/{page.relative_to(SITE_DIR)}")
        except ExtractionError:
            continue  # the gallery has no main text
        chunks += [c.text for c in chunk_document(document) if not c.is_parent and detect_language(c.text) == language]
    return tuple(chunks)


def packed_chunks(language: str, count: int, characters: int = 400) -> list[str]:
    """`count` chunks of about `characters` characters: the demo chunks' words, in order, cycled."""
    words = " ".join(demo_child_chunks(language)).split()
    chunks: list[str] = []
    current: list[str] = []
    position = 0
    while len(chunks) < count:
        current.append(words[position % len(words)])
        position += 1
        if sum(len(word) + 1 for word in current) > characters:
            chunks.append(" ".join(current))
            current = []
    return chunks
