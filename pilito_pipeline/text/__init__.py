"""HTML → document, Persian normalisation, tokenising, chunking, TL;DR. Pure functions only."""

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
from pilito_pipeline.text.tokenize import tokenize

__all__ = [
    "Block",
    "ExtractedDocument",
    "ExtractionError",
    "ExtractionOptions",
    "detect_language",
    "document_hash",
    "extract_document",
    "normalize",
    "tokenize",
]
