"""`pilito-pipeline up`: the whole stack for your own websites, on the embedded defaults.

Starts the embedded PostgreSQL (unless `DATABASE_URL` is set), the embedding service (for a local
model, unless EMBEDDING_SERVICE_URL names one already or `--in-process-embedding`) and Dagster
(webserver + daemon, the project's dagster.yaml, Postgres storage; EMBEDDING_SERVICE_URL set to
the service), then waits; websites registered from another terminal
are crawled, chunked and embedded by the sensors. Ctrl-C or SIGTERM stops everything it started.
`pilito-pipeline demo` is this stack plus a sample site and two questions.

One stack per data folder: a second `up` (or `demo`) on the same folder stops with a clear error
instead of starting a second database and Dagster on it.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from pilito_pipeline.app.dagster_process import DagsterProcess, start_dagster
from pilito_pipeline.app.embedding_process import (
    EmbeddingServiceProcess, start_embedding_service, wants_embedding_service,
)
from pilito_pipeline.settings import Settings

LOCK_FILE = "stack.lock"


class StackAlreadyRunning(RuntimeError):
    """Another `up`/`demo` holds the data folder, or something else listens on the UI port."""


@dataclass
class Stack:
    settings: Settings
    """With EMBEDDING_SERVICE_URL the service's, when the stack started one."""
    database_url: str
    dagster: DagsterProcess
    embedding: EmbeddingServiceProcess | None = None

    @property
    def database_description(self) -> str:
        if self.settings.uses_embedded_postgres:
            pgdata = self.settings.data_dir / "pgdata"
            return f"embedded PostgreSQL, data {pgdata} (log: {pgdata / 'log'})"
        return "DATABASE_URL"


@contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    """Hold `data_dir/stack.lock` (an exclusive flock, freed by the kernel if this process dies).

    Raises StackAlreadyRunning, naming the holder's pid, when another process holds it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise StackAlreadyRunning(
                f"a pilito-pipeline stack (pid {holder}) is already running on the data folder {data_dir};"
                " stop it first (Ctrl-C in its terminal), or use another --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def check_port_free(host: str, port: int) -> None:
    """Refuse a port something already listens on (Dagster's webserver would fail, and the readiness
    check would find the other server instead)."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise StackAlreadyRunning(f"{host}:{port} is already in use ({exc.strerror}); choose another --port") from None


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def stop_on_signals() -> None:
    """Ctrl-C and SIGTERM both raise KeyboardInterrupt, even when started from a shell that ignores
    SIGINT (as a background job), so the `finally` blocks stop everything."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C/SIGTERM wait until the block is done, then interrupt: a database half-initialised, or a
    Dagster process started but not yet known to us, would be left behind."""
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum)) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        raise KeyboardInterrupt


@contextmanager
def signals_ignored() -> Iterator[None]:
    """While stopping: a second Ctrl-C/SIGTERM must not leave half the stack running."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def running_stack(
    settings: Settings, host: str = "127.0.0.1", port: int = 3000, *, embedding_service: bool = True
) -> Iterator[Stack]:
    """The database (migrated), the embedding service (`embedding_service` and a local model) and
    Dagster, up and answering; all stopped on exit, whatever happens."""
    from pilito_pipeline.store.db import resolve_database_url
    from pilito_pipeline.store.migrate import migrate
    from pilito_pipeline.store.server import stop_embedded_server

    with data_dir_lock(settings.data_dir):
        check_port_free(host, port)
        print(f"starting the database, the embedding service and Dagster (data folder {settings.data_dir})...", flush=True)
        try:
            with signals_held():
                url = resolve_database_url(settings)
            migrate(url, embedding_dimension=settings.embedding_dimension)
            with running_embedding_service(settings, embedding_service) as (settings, embedding):
                dagster = None
                try:
                    with signals_held():
                        dagster = start_dagster(settings, url, host=host, port=port,
                                                extra_env={"EMBEDDING_SERVICE_URL": settings.embedding_service_url})
                    if embedding is not None:
                        embedding.wait_until_ready()
                    dagster.wait_until_ready()
                    yield Stack(settings, url, dagster, embedding)
                finally:
                    if dagster is not None:
                        with signals_ignored():
                            dagster.stop()
        finally:
            with signals_ignored():
                if settings.uses_embedded_postgres and (settings.data_dir / "pgdata" / "postmaster.pid").exists():
                    stop_embedded_server(settings.data_dir)


@contextmanager
def running_embedding_service(
    settings: Settings, wanted: bool
) -> Iterator[tuple[Settings, EmbeddingServiceProcess | None]]:
    """The settings Dagster gets (EMBEDDING_SERVICE_URL: the service started here) and the service,
    started when `wanted` and the model is local (not waited for: the model loads while Dagster
    starts); stopped on exit."""
    if not (wanted and wants_embedding_service(settings)):
        yield settings, None
        return
    embedding = None
    try:
        with signals_held():
            embedding = start_embedding_service(settings)
        yield replace(settings, embedding_service_url=embedding.url), embedding
    finally:
        if embedding is not None:
            with signals_ignored():
                embedding.stop()


def run_up(settings: Settings, host: str, port: int, *, embedding_service: bool = True) -> int:
    stop_on_signals()
    try:
        with running_stack(settings, host, port, embedding_service=embedding_service) as stack:
            print(f"database: {stack.database_description}")
            if stack.embedding is not None:
                print(f"embedding service: {stack.embedding.url} (log: {stack.embedding.log_path})")
            print(f"Dagster UI: {stack.dagster.url}  (webserver + daemon; log: {stack.dagster.log_path})")
            print("register a website from another terminal, for example:")
            print("  .venv/bin/pilito-pipeline register-website --tenant acme https://www.example.com/")
            print("Ctrl-C stops everything.", flush=True)
            code = wait_for_interrupt(stack)
    except KeyboardInterrupt:  # while starting: what had started is stopped already
        return 130
    print("stopped.", flush=True)
    return code


def wait_for_interrupt(stack: Stack) -> int:
    """Block until Ctrl-C/SIGTERM (0) or until Dagster exits by itself (1, with where to look)."""
    try:
        code = stack.dagster.process.wait()
    except KeyboardInterrupt:
        print("\nstopping Dagster, the embedding service and the database...", flush=True)
        return 0
    print(f"Dagster exited by itself (code {code}); see {stack.dagster.log_path}. Stopping the database...", flush=True)
    return 1
