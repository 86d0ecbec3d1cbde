"""HTML → document, Persian normalisation, tokenising, chunking, TL;DR. Pure functions only."""

from pilito_pipeline.text.chunking import (
    Chunk,
    ChunkingOptions,
    blocks_from_plain_text,
    chunk_document,
    chunk_faq,
    chunk_manual_text,
)
from pilito_pipeline.text.extract import (
    Block,
    ExtractedDocument,
    ExtractionError,
    ExtractionOptions,
    detect_language,
    document_hash,
    extract_document,
)
from pilito_pipeline.text.normalize import normalize
from pilito_pipeline.text.sentences import estimate_tokens, split_sentences
from pilito_pipeline.text.tldr import make_tldr
from pilito_pipeline.text.tokenize import tokenize

__all__ = [
    "Block",
    "Chunk",
    "ChunkingOptions",
    "blocks_from_plain_text",
    "chunk_document",
    "chunk_faq",
    "chunk_manual_text",
    "estimate_tokens",
    "make_tldr",
    "split_sentences",
    "ExtractedDocument",
    "ExtractionError",
    "ExtractionOptions",
    "detect_language",
    "document_hash",
    "extract_document",
    "normalize",
    "tokenize",
]
