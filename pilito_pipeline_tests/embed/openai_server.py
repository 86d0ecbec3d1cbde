"""A small OpenAI-compatible `/v1/embeddings` server on 127.0.0.1 for the provider tests.

Vectors are a deterministic function of the text (so tests can compare them), requests are
recorded, and `fail_next` queues the next answers: a `Failure` (status, headers, message, delay)
or None for a normal answer. A request with an input containing `refuse_inputs_containing` is
refused with 400, as the API refuses an input it cannot take.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

DEFAULT_DIMENSION = 8


def expected_vector(text: str, dimension: int) -> np.ndarray:
    """The (normalised) vector the server answers for `text`."""
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")
    vector = np.random.default_rng(seed).standard_normal(dimension).astype(np.float32)
    return vector / np.linalg.norm(vector)


@dataclass
class Failure:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    message: str = "simulated failure"
    delay_seconds: float = 0.0


@dataclass
class EmbeddingServer:
    url: str = ""
    requests: list[dict] = field(default_factory=list)
    authorizations: list[str] = field(default_factory=list)
    failures: deque[Failure | None] = field(default_factory=deque)
    always_fail: Failure | None = None
    dimension_override: int | None = None
    refuse_inputs_containing: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)
    admitted: threading.Event = field(default_factory=threading.Event)
    """Cleared: requests wait (already counted in `authorizations`) until it is set again."""

    def __post_init__(self) -> None:
        self.admitted.set()

    def fail_next(self, *failures: Failure | None) -> None:
        with self.lock:
            self.failures.extend(failures)

    @property
    def inputs_per_request(self) -> list[int]:
        return [len(r["input"]) for r in self.requests]


def _handler(server: EmbeddingServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            with server.lock:
                server.authorizations.append(self.headers.get("Authorization", ""))
            server.admitted.wait()
            with server.lock:
                failure = server.failures.popleft() if server.failures else server.always_fail
                if failure is None:
                    server.requests.append(body)
            if failure is not None:
                time.sleep(failure.delay_seconds)
                payload = {"error": {"message": failure.message, "type": "test", "code": None}}
                return self._answer(failure.status, payload, failure.headers)
            if self.path != "/v1/embeddings":
                return self._answer(404, {"error": {"message": "no such route"}})
            poison = server.refuse_inputs_containing
            if poison and any(poison in text for text in body["input"]):
                return self._answer(400, {"error": {"message": "this input cannot be embedded", "type": "test"}})
            dimension = server.dimension_override or body.get("dimensions") or DEFAULT_DIMENSION
            data = []
            for index, text in enumerate(body["input"]):
                vector = expected_vector(text, dimension)
                encoded = (
                    base64.b64encode(vector.astype("<f4").tobytes()).decode()
                    if body.get("encoding_format") == "base64"
                    else vector.tolist()
                )
                data.append({"object": "embedding", "index": index, "embedding": encoded})
            data.reverse()  # the API does not promise order; clients sort by index
            usage = {"prompt_tokens": 1, "total_tokens": 1}
            self._answer(200, {"object": "list", "data": data, "model": body["model"], "usage": usage})

        def _answer(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
            raw = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(raw)

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # clients that time out hang up
            super().handle_error(request, client_address)  # type: ignore[arg-type]


@contextmanager
def running_server() -> Iterator[EmbeddingServer]:
    state = EmbeddingServer()
    httpd = _Server(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
