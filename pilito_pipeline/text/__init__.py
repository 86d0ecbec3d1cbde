"""HTML → document, Persian normalisation, tokenising, chunking, TL;DR. Pure functions only."""

from pilito_pipeline.text.normalize import normalize
from pilito_pipeline.text.tokenize import tokenize

__all__ = ["normalize", "tokenize"]
