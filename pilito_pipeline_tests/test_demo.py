"""The README's first command, as a user runs it: `pilito-pipeline demo` starts Dagster (webserver +
daemon, with the project's dagster.yaml on Postgres storage), whose sensors crawl and embed the
sample site; the demo then answers a Persian and an English question. Here it stops after answering."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pilito_pipeline_tests.services import free_port

pytestmark = pytest.mark.slow


@pytest.mark.timeout(1500)  # the demo's own waits are 600 s per stage; a loaded machine is slow, not failing
def test_demo_command_runs_the_pipeline_through_dagster(tmp_path: Path) -> None:
    env = {**os.environ, "PILITO_DATA_DIR": str(tmp_path / "data")}
    env.pop("DATABASE_URL", None)
    demo = subprocess.Popen(
        [sys.executable, "-m", "pilito_pipeline.app.cli", "demo", "--exit-after-answers",
         "--port", str(free_port()), "--site-port", str(free_port())],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
    )
    try:
        output, _ = demo.communicate(timeout=1400)
    except subprocess.TimeoutExpired:
        demo.terminate()  # SIGTERM: the demo stops what it started (a kill would leave Dagster and Postgres)
        output, _ = demo.communicate()
    log = tmp_path / "data" / "dagster.log"
    assert demo.returncode == 0, output + (log.read_text()[-5000:] if log.exists() else "")
    assert "embedding service up at http://127.0.0.1:" in output  # the page runs' model, loaded once
    assert "pipeline done" in output
    answers = output.split("Q: ")[1:]
    assert len(answers) == 2
    assert "ielts" in answers[0].lower()
    assert "scholarship" in answers[1].lower()
    assert leftover_processes(tmp_path / "data") == []


def leftover_processes(data_dir: Path) -> list[str]:
    """Processes still running for this demo: Dagster's (by DAGSTER_HOME), the embedding service's
    (by PILITO_DATA_DIR) or the database's."""
    import psutil

    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            environ = process.environ()
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        cmdline = " ".join(process.info["cmdline"] or [])
        if (environ.get("DAGSTER_HOME", "").startswith(str(data_dir)) or str(data_dir / "pgdata") in cmdline
                or ("embed-serve" in cmdline and environ.get("PILITO_DATA_DIR") == str(data_dir))):
            found.append(cmdline)
    return found
