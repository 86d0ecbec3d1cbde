"""Embeddings from the OpenAI API (or any OpenAI-compatible server, the pipeline's own embedding
service included: `EmbeddingServiceProvider`) with the official client.

Requests carry up to 2048 inputs and stay under the per-request token cap; the client retries
429/408/409/5xx and connection errors with exponential backoff, honouring Retry-After
(`retries.OPENAI_CLIENT_RETRIES` times; a refused request is never retried). Failures
come out as `ProviderUnavailable` (try again later) or `EmbeddingRequestError` (fix something).
The API key is handed to the client and never logged or put in a message.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import openai
import pybreaker
from openai.types import CreateEmbeddingResponse

from pilito_pipeline.embed.errors import EmbeddingRequestError, ProviderMisconfigured, ProviderUnavailable
from pilito_pipeline.embed.provider import l2_normalised
from pilito_pipeline.sparse_vector import SparseVector
from pilito_pipeline.retries import OPENAI_CLIENT_RETRIES

MAX_INPUTS_PER_REQUEST = 2048
MAX_TOKENS_PER_REQUEST = 300_000
"""OpenAI's cap on the tokens of all inputs of one request."""


def request_batches(
    texts: Sequence[str], *, max_inputs: int = MAX_INPUTS_PER_REQUEST, max_tokens: int = MAX_TOKENS_PER_REQUEST
) -> Iterator[tuple[int, int]]:
    """(start, end) slices of `texts` that each fit one request.

    A text's token count is bounded by its UTF-8 length (every BPE token is at least one byte), so
    the split never exceeds the cap without needing the model's tokenizer.
    """
    start, budget = 0, 0
    for end, text in enumerate(texts):
        cost = len(text.encode("utf-8"))
        if end > start and (end - start >= max_inputs or budget + cost > max_tokens):
            yield start, end
            start, budget = end, 0
        budget += cost
    if start < len(texts):
        yield start, len(texts)


class OpenAIProvider:
    """`model` via `/embeddings`; `dimensions` is sent for text-embedding-3 models (they can shorten)."""

    def __init__(
        self,
        model: str,
        dimension: int,
        *,
        api_key: str,
        base_url: str = "",
        timeout_seconds: float = 30.0,
        max_retries: int = OPENAI_CLIENT_RETRIES,
        max_inputs_per_request: int = MAX_INPUTS_PER_REQUEST,
        max_tokens_per_request: int = MAX_TOKENS_PER_REQUEST,
        breaker: pybreaker.CircuitBreaker | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("the OpenAI embedding provider needs an API key (OPENAI_API_KEY)")
        if not 1 <= max_inputs_per_request <= MAX_INPUTS_PER_REQUEST:
            raise ValueError(f"max_inputs_per_request must be 1..{MAX_INPUTS_PER_REQUEST}")
        self.model_name = model
        self.dimension = dimension
        self._client = openai.OpenAI(
            api_key=api_key, base_url=base_url or None, timeout=timeout_seconds, max_retries=max_retries
        )
        self._max_inputs = max_inputs_per_request
        self._max_tokens = max_tokens_per_request
        self._breaker = breaker
        self._dimensions_param = dimension if model.startswith("text-embedding-3") else openai.omit

    server_name = "OpenAI"
    """How errors name the server."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, "passage")

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """OpenAI's embedding models take queries and passages alike."""
        return self._embed(texts, "query")

    def _check_texts(self, texts: Sequence[str]) -> None:
        for position, text in enumerate(texts):
            if not text.strip():
                raise EmbeddingRequestError(f"text {position} is empty; the embeddings API refuses empty input")

    def _extra_body(self, input_type: str) -> dict[str, str] | None:
        """Fields beyond OpenAI's own sent with a request of `input_type` ("passage" or "query")."""
        return None

    def _embed(self, texts: Sequence[str], input_type: str) -> np.ndarray:
        self._check_texts(texts)
        parts = [
            self._vectors(list(texts[start:end]), self._guarded(list(texts[start:end]), input_type))
            for start, end in request_batches(texts, max_inputs=self._max_inputs, max_tokens=self._max_tokens)
        ]
        if not parts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.concatenate(parts)

    def _guarded(self, batch: list[str], input_type: str) -> CreateEmbeddingResponse:
        """The server's answer to one request, through the circuit breaker when there is one."""
        if self._breaker is None:
            return self._request(batch, input_type)
        try:
            return self._breaker.call(self._request, batch, input_type)
        except pybreaker.CircuitBreakerError as exc:
            raise ProviderUnavailable(
                f"embedding provider {self.model_name!r} is failing; circuit breaker open ({exc})"
            ) from exc

    def _request(self, batch: list[str], input_type: str) -> CreateEmbeddingResponse:
        server = self.server_name
        try:
            return self._client.embeddings.create(
                input=batch, model=self.model_name, dimensions=self._dimensions_param,
                extra_body=self._extra_body(input_type),
            )
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise ProviderMisconfigured(
                f"{server} refused the API key (HTTP {exc.status_code}); check OPENAI_API_KEY"
            ) from exc
        except (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError) as exc:
            raise ProviderUnavailable(f"{server} embeddings unavailable: {_describe(exc)}") from exc
        except openai.NotFoundError as exc:
            raise ProviderMisconfigured(f"{server} does not know the model: {_describe(exc)}") from exc
        except openai.APIStatusError as exc:
            if exc.status_code in (408, 409) or exc.status_code >= 500:
                raise ProviderUnavailable(f"{server} embeddings unavailable: {_describe(exc)}") from exc
            raise EmbeddingRequestError(f"{server} rejected the embedding request: {_describe(exc)}") from exc

    def _vectors(self, batch: list[str], response: CreateEmbeddingResponse) -> np.ndarray:
        server = self.server_name
        data = sorted(response.data, key=lambda item: item.index)
        if len(data) != len(batch):
            raise EmbeddingRequestError(f"{server} returned {len(data)} embeddings for {len(batch)} inputs")
        vectors = np.asarray([item.embedding for item in data], dtype=np.float32)
        if vectors.shape[1] != self.dimension:
            raise ProviderMisconfigured(
                f"model {self.model_name!r} returned {vectors.shape[1]}-dimensional vectors,"
                f" expected {self.dimension} (EMBEDDING_DIMENSION)"
            )
        return l2_normalised(vectors)


SERVICE_TIMEOUT_SECONDS = 300.0
"""A request waits for the batches queued before it (other runs' pages), then for its own."""
SERVICE_MAX_INPUTS_PER_REQUEST = 256
"""Texts per request to the service: bounded, so each request is a few seconds of the model."""


class EmbeddingServiceProvider(OpenAIProvider):
    """The pipeline's own embedding service (`pilito-pipeline embed-serve`, embed/service.py) at
    `url`, through the OpenAI client: the same retries, error kinds and circuit breaker as
    `OpenAIProvider`. Each request names its input kind (`input_type`: "passage" for `embed`,
    "query" for `embed_queries`), so the service applies exactly the provider methods an
    in-process provider would; `model` is the name the in-process provider stores, and the
    service refuses any other, so switching between the two re-embeds nothing.
    """

    server_name = "the embedding service"

    def __init__(
        self, url: str, model: str, dimension: int, *, breaker: pybreaker.CircuitBreaker | None = None,
        timeout_seconds: float = SERVICE_TIMEOUT_SECONDS, max_retries: int = OPENAI_CLIENT_RETRIES,
        max_inputs_per_request: int = SERVICE_MAX_INPUTS_PER_REQUEST,
    ) -> None:
        # The service asks for no key; the OpenAI client insists on one.
        super().__init__(
            model, dimension, api_key="no-key", base_url=f"{url.rstrip('/')}/v1", timeout_seconds=timeout_seconds,
            max_retries=max_retries, max_inputs_per_request=max_inputs_per_request, breaker=breaker,
        )
        self.url = url

    def _check_texts(self, texts: Sequence[str]) -> None:
        """Nothing refused here: the service's provider decides, as it would in process."""

    def _extra_body(self, input_type: str) -> dict[str, str] | None:
        return {"input_type": input_type}


class LatentTermsServiceProvider(EmbeddingServiceProvider):
    """`EmbeddingServiceProvider` for a model with a sparse head (e5): also the passages' latent
    terms with their vectors (`embed_with_latent_terms`, one pass in the service) and the queries'
    (`query_latent_terms`), as the provider computes them in process."""

    def embed_with_latent_terms(self, texts: Sequence[str]) -> tuple[np.ndarray, list[SparseVector]]:
        vectors, latents = [], []
        for start, end in request_batches(texts, max_inputs=self._max_inputs, max_tokens=self._max_tokens):
            batch = list(texts[start:end])
            response = self._guarded(batch, "latent_terms")
            vectors.append(self._vectors(batch, response))
            latents += self._latent_terms(batch, response)
        return (np.concatenate(vectors) if vectors else np.zeros((0, self.dimension), dtype=np.float32)), latents

    def query_latent_terms(self, texts: Sequence[str]) -> list[SparseVector]:
        found = []
        for start, end in request_batches(texts, max_inputs=self._max_inputs, max_tokens=self._max_tokens):
            batch = list(texts[start:end])
            found += self._latent_terms(batch, self._guarded(batch, "query_latent_terms"))
        return found

    def _latent_terms(self, batch: list[str], response: CreateEmbeddingResponse) -> list[SparseVector]:
        data = sorted(response.data, key=lambda item: item.index)
        if len(data) != len(batch):
            raise EmbeddingRequestError(f"{self.server_name} returned {len(data)} latent-term vectors for {len(batch)} inputs")
        found = []
        for item in data:
            terms = (item.model_extra or {}).get("latent_terms")
            if not isinstance(terms, dict):
                raise ProviderMisconfigured(f"{self.server_name} answered without latent terms")
            found.append(SparseVector(np.asarray(terms["indices"], dtype=np.int32),
                                      np.asarray(terms["values"], dtype=np.float32), int(terms["dimension"])))
        return found


def _describe(exc: openai.APIError) -> str:
    if isinstance(exc, openai.APITimeoutError):
        return "request timed out"
    if isinstance(exc, openai.APIConnectionError):
        return "could not connect"
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {exc.message}"
    return type(exc).__name__
