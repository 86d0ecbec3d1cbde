"""`pilito-pipeline up`, as the README's "Using it" runs it: `up` in one terminal; `register-website`,
`status` and `ask` in another; SIGTERM stops everything it started. One stack per data folder."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest

from pilito_pipeline.crawl import normalize_url
from pilito_pipeline.app.status import HEADER
from pilito_pipeline.app.up import data_dir_lock
from pilito_pipeline_tests.services import free_port
from pilito_pipeline_tests.test_demo import leftover_processes
from pilito_pipeline_tests.waiting import wait_for

DEADLINE_SECONDS = 900  # the whole flow; generous: a loaded 2-core machine is slow, not failing


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's signature
        pass


@pytest.fixture
def small_site(tmp_path: Path) -> Iterator[str]:
    """Two pages on 127.0.0.1; the second is only reachable through the first."""
    root = tmp_path / "site"
    root.mkdir()
    (root / "index.html").write_text(
        "<html><head><title>Teapot Museum</title></head><body><h1>Teapot Museum</h1>"
        "<p>Welcome to the teapot museum. See our <a href='/hours.html'>opening hours</a>.</p></body></html>"
    )
    (root / "hours.html").write_text(
        "<html><head><title>Opening hours</title></head><body><h1>Opening hours</h1>"
        "<p>The teapot museum opens at nine in the morning and closes at five in the afternoon,"
        " every day except Mondays. Entry for children under twelve is free.</p></body></html>"
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(root)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def user_env(data_dir: Path) -> dict[str, str]:
    """The environment of a user's terminals: the same data folder, a site on 127.0.0.1 allowed."""
    env = {**os.environ, "PILITO_DATA_DIR": str(data_dir), "CRAWL_ALLOWED_HOSTS": "127.0.0.1",
           "CRAWL_RATE_LIMIT_SECONDS": "0.05"}
    env.pop("DATABASE_URL", None)
    return env


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pilito_pipeline.app.cli", *args],
        env=env, capture_output=True, text=True, timeout=DEADLINE_SECONDS, stdin=subprocess.DEVNULL,
    )


def status_row(screen: str, url: str) -> dict[str, str]:
    """The `status` table's row for the site whose URL line is `url` (columns as the header places them)."""
    lines = screen.splitlines()
    starts = [lines[0].index(name) for name in HEADER]
    row = lines[lines.index(f"    {url}") - 1]
    ends = starts[1:] + [len(row)]
    return {name: row[start:end].strip() for name, start, end in zip(HEADER, starts, ends, strict=True)}


@pytest.mark.slow
@pytest.mark.timeout(DEADLINE_SECONDS + 300)
def test_up_runs_the_readme_flow_and_stops_everything_on_sigterm(tmp_path: Path, small_site: str) -> None:
    data_dir = tmp_path / "data"
    env = user_env(data_dir)
    output = tmp_path / "up.out"
    deadline = time.monotonic() + DEADLINE_SECONDS
    with open(output, "w") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "pilito_pipeline.app.cli", "up", "--port", str(free_port())],
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )

    def diagnostics() -> str:
        log = data_dir / "dagster.log"
        return output.read_text() + "\n--- dagster.log (end) ---\n" + (log.read_text()[-6000:] if log.exists() else "")

    try:
        def up_ready() -> bool:
            assert up.poll() is None, f"`up` exited with {up.returncode}\n{diagnostics()}"
            return "Ctrl-C stops everything" in output.read_text()

        wait_for("a ready stack", up_ready, deadline - time.monotonic(), interval=2, diagnostics=diagnostics)
        printed = output.read_text()
        assert "Dagster UI: http://127.0.0.1:" in printed and str(data_dir / "dagster.log") in printed
        assert "embedding service: http://127.0.0.1:" in printed and str(data_dir / "embedding-service.log") in printed
        assert "Warning" not in printed  # nothing a newcomer has to wonder about

        # A second `up` on the same data folder refuses, and the first one keeps running.
        second = cli(env, "up", "--port", str(free_port()))
        assert second.returncode == 2
        assert f"(pid {up.pid}) is already running on the data folder {data_dir}" in second.stderr
        assert up.poll() is None

        registered = cli(env, "register-website", "--tenant", "acme", small_site)
        assert registered.returncode == 0, registered.stderr

        def status_ready() -> bool:
            status = cli(env, "status", "--tenant", "acme")
            assert status.returncode == 0, status.stderr
            site = status_row(status.stdout, normalize_url(small_site))
            return site["state"] == "ready" and site["pending"] == "0" and int(site["indexed"]) >= 2

        wait_for("the crawled website in `status`", status_ready, deadline - time.monotonic(), interval=2,
                 diagnostics=diagnostics)

        def answered() -> bool:
            asked = cli(env, "ask", "--tenant", "acme", "--json", "When does the teapot museum open?")
            assert asked.returncode == 0, asked.stderr
            return any(chunk["url"] == small_site + "hours.html"
                       for chunk in json.loads(asked.stdout)["primary_context"])

        wait_for("an answer from the crawled page", answered, deadline - time.monotonic(), interval=2,
                 diagnostics=diagnostics)

        started = [up_process := psutil.Process(up.pid), *up_process.children(recursive=True)]
        postmaster = int((data_dir / "pgdata" / "postmaster.pid").read_text().split()[0])
        started.append(psutil.Process(postmaster))
        assert len(started) > 4  # `up`, the embedding service, dagster dev (webserver, daemon, code server...), postgres
        assert any("embed-serve" in " ".join(p.cmdline()) for p in started)
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
        up.wait(timeout=300)

    assert up.returncode == 0, diagnostics()
    assert output.read_text().rstrip().endswith("stopped.")
    _, alive = psutil.wait_procs(started, timeout=120)
    assert alive == []
    assert leftover_processes(data_dir) == []
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()  # the embedded database is stopped
    with pytest.raises(ProcessLookupError):
        os.killpg(up.pid, 0)  # nothing left in `up`'s process group


@pytest.mark.slow
@pytest.mark.timeout(DEADLINE_SECONDS + 300)
def test_sigterm_while_starting_stops_what_had_started(tmp_path: Path) -> None:
    """Interrupted as soon as the embedded database is up (migrating, or starting Dagster): nothing
    is left behind, whichever step the signal lands in."""
    data_dir = tmp_path / "data"
    up = subprocess.Popen(
        [sys.executable, "-m", "pilito_pipeline.app.cli", "up", "--port", str(free_port())],
        env=user_env(data_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        stdin=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        wait_for("the embedded database", lambda: (data_dir / "pgdata" / "postmaster.pid").exists()
                 or up.poll() is not None, DEADLINE_SECONDS, interval=2)
    finally:
        up.send_signal(signal.SIGTERM)
        output, _ = up.communicate(timeout=300)
    assert up.returncode in (0, 130), output  # 0: the UI was already up when the signal came
    assert leftover_processes(data_dir) == []
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()


def test_a_second_up_on_the_same_data_folder_is_a_clear_error(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with data_dir_lock(data_dir):  # as a running `up` or `demo` holds it
        refused = cli(user_env(data_dir), "up", "--port", str(free_port()))
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        f"error: a pilito-pipeline stack (pid {os.getpid()}) is already running on the data folder {data_dir};"
        " stop it first (Ctrl-C in its terminal), or use another --data-dir"
    )
    assert not (data_dir / "pgdata").exists()  # no database was started


def test_demo_refuses_a_data_folder_in_use_too(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with data_dir_lock(data_dir):
        refused = cli(user_env(data_dir), "demo", "--port", str(free_port()), "--site-port", str(free_port()))
    assert refused.returncode == 2
    assert "is already running on the data folder" in refused.stderr


def test_a_killed_stack_does_not_block_the_next_one(tmp_path: Path) -> None:
    """The lock is an flock: the kernel frees it when its holder dies, even by SIGKILL."""
    data_dir = tmp_path / "data"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\nfrom pilito_pipeline.app.up import data_dir_lock\n"
         "with data_dir_lock(Path(sys.argv[1])):\n    print('locked', flush=True)\n    time.sleep(3600)\n",
         str(data_dir)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        from pilito_pipeline.app.up import StackAlreadyRunning

        with pytest.raises(StackAlreadyRunning, match=f"pid {holder.pid}"), data_dir_lock(data_dir):
            pass
    finally:
        holder.kill()
        holder.wait()
    with data_dir_lock(data_dir):
        assert (data_dir / "stack.lock").read_text().strip() == str(os.getpid())


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = cli(user_env(tmp_path / "data"), "up", "--port", str(port))
    assert refused.returncode == 2
    assert f"127.0.0.1:{port} is already in use" in refused.stderr
    assert not (tmp_path / "data" / "pgdata").exists()


@pytest.mark.slow
def test_the_embedding_service_process_serves_the_model_and_stops_on_sigterm(tmp_path: Path) -> None:
    """What `up` starts for the page runs: `embed-serve` as a child in its own process group, ready
    once the model answers, stopped cleanly (exit 0) by SIGTERM."""
    from pilito_pipeline.app.embedding_process import start_embedding_service
    from pilito_pipeline.embed import E5Provider, build_provider
    from pilito_pipeline.settings import Settings

    settings = Settings(data_dir=tmp_path / "data")
    service = start_embedding_service(settings)
    try:
        assert service.wait_until_ready() == E5Provider().model_name
        client = build_provider(Settings(embedding_service_url=service.url))
        assert client.embed(["The teapot museum opens at nine."]).shape == (1, 384)
    finally:
        service.stop()
    assert service.process.returncode == 0, service.log_path.read_text()
    assert "embedding service for multilingual-e5-small-q4" in service.log_path.read_text()
    with pytest.raises(ProcessLookupError):
        os.killpg(service.process.pid, 0)
