"""What can go wrong when embedding, in the two kinds a caller handles differently."""

from __future__ import annotations


class EmbeddingError(RuntimeError):
    """Embedding failed."""


class ProviderUnavailable(EmbeddingError):
    """The provider is down, overloaded or the circuit breaker is open: retry later (with backoff)."""


class EmbeddingRequestError(EmbeddingError):
    """The provider refused the request or answered nonsense; retrying will not help.

    Bad API key, unknown model, input over the model's limit, vectors of the wrong size.
    """


class ProviderMisconfigured(EmbeddingRequestError):
    """The provider refuses every request, whatever the texts: bad API key, no permission, unknown
    model, vectors of the wrong size. No page is to blame, so none is recorded as failed."""
