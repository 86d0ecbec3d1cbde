"""Start Dagster (webserver + daemon) on the pipeline's database, and stop it cleanly.

`dagster dev` launched from another process inherits ignored signals and does not stop on
SIGTERM, so the child resets them before exec, gets its own process group, and is stopped with
SIGINT, as Ctrl-C in a terminal would.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psycopg

from pilito_pipeline.settings import PROJECT_ROOT, Settings
from pilito_pipeline.store.server import sqlalchemy_uri

DAGSTER_DATABASE = "dagster"
DAGSTER_PROCESS_ENV = {"DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "true", "DAGSTER_EVENT_BATCH_SIZE": "500"}
"""Set for every Dagster process (here, docker/Dockerfile, deploy/helm/pilito-config.yaml; a test
compares them). Both are Dagster's opt-ins for range runs, which log one event per page otherwise:
- DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS (dagster-io/dagster#29288, #32242): one
  "materialization planned" event per asset instead of one per partition. Without it the daemon
  spent 10 s writing 600 events, one connection each, before a 200-page run could even be queued.
  What it gives up: the partitions of a failed range run are not marked failed in the UI (the run
  is, and the pipeline's own page state keeps them pending for a retry).
- DAGSTER_EVENT_BATCH_SIZE (dagster-io/dagster#19862): the materializations an asset's step logs for
  the pages of its range are written in batches of up to this many (one insert each) instead of
  one at a time, two connections each.
"""
DEV_COMMAND_NOTICE = "ignore:Function `dev_command` is superseded:FutureWarning"


@dataclass
class DagsterProcess:
    process: subprocess.Popen
    url: str
    log_path: Path

    def wait_until_ready(self, timeout: float = 600.0) -> None:
        """Until the UI answers; a crash ends the wait at once, so the deadline can be generous (a busy
        machine takes minutes to start the webserver, daemon and code server)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dagster dev exited early; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/server_info", timeout=2):
                    return
            except OSError:
                time.sleep(1)
        raise TimeoutError(f"Dagster UI not up after {timeout:.0f}s; see {self.log_path}")

    def stop(self, timeout: float = 30.0) -> None:
        """Interrupt the process group as Ctrl-C would (dagster dev then shuts its webserver and
        daemon down); kill whatever is left after `timeout`."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()


def ensure_dagster_database(pipeline_url: str) -> str:
    """Create the `dagster` database beside the pipeline's; return its SQLAlchemy URL."""
    head, sep, query = pipeline_url.partition("?")
    base = head.rsplit("/", 1)[0]
    with psycopg.connect(f"{base}/postgres{sep}{query}", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DAGSTER_DATABASE,)).fetchone():
            conn.execute(f'CREATE DATABASE "{DAGSTER_DATABASE}"')
            # Dagster's event log commits every event on its own connection (hundreds per page run);
            # not waiting for each to reach the disk cut a run's bookkeeping by a third. A crash of
            # the machine may lose the last fraction of a second of run events, never knowledge.
            conn.execute(f'ALTER DATABASE "{DAGSTER_DATABASE}" SET synchronous_commit = off')
    return sqlalchemy_uri(f"{base}/{DAGSTER_DATABASE}{sep}{query}")


def prepare_dagster_home(settings: Settings) -> Path:
    """A DAGSTER_HOME under the data folder holding the project's dagster.yaml."""
    home = settings.data_dir / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


def _reset_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def start_dagster(
    settings: Settings, pipeline_url: str, host: str = "127.0.0.1", port: int = 3000,
    extra_env: Mapping[str, str] | None = None,
) -> DagsterProcess:
    """Run `dagster dev` for the project's definitions (environment inherited: crawl limits, models,
    Redis; plus `extra_env`, such as the embedding service's URL); its output goes to the data folder."""
    env = {**os.environ, "PILITO_DATA_DIR": str(settings.data_dir)}
    env.update({name: value for name, value in (extra_env or {}).items() if value})
    return launch_dagster_dev(
        prepare_dagster_home(settings), ensure_dagster_database(pipeline_url), settings.data_dir / "dagster.log",
        env, host=host, port=port,
    )


def launch_dagster_dev(
    home: Path, dagster_postgres_url: str, log_path: Path, env: Mapping[str, str],
    host: str = "127.0.0.1", port: int = 3000,
) -> DagsterProcess:
    """`dagster dev` (webserver, daemon, code server) on the instance in `home`, with `env` plus what
    every Dagster process of the project gets (DAGSTER_PROCESS_ENV), in a process group of its own
    that stops on SIGINT; its output is appended to `log_path`. `up`, the tests' stacks and the
    benchmarks all start Dagster here."""
    env = {
        **env,
        "DAGSTER_HOME": str(home),
        "DAGSTER_POSTGRES_URL": dagster_postgres_url,
        "HF_HUB_OFFLINE": "1",
        **DAGSTER_PROCESS_ENV,
        # `dagster dev` (webserver + daemon in one command) warns that the separate `dg` CLI
        # supersedes it; that CLI is not part of this project, so the notice is noise in the log.
        "PYTHONWARNINGS": ",".join(filter(None, (env.get("PYTHONWARNINGS"), DEV_COMMAND_NOTICE))),
    }
    command = [
        sys.executable, "-m", "dagster", "dev",
        "-w", str(PROJECT_ROOT / "workspace.yaml"), "-h", host, "-p", str(port),
    ]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            # From DAGSTER_HOME: started beside the project's own dagster.yaml, `dagster dev` warns that
            # that file is not the instance's (the copy in DAGSTER_HOME is). The workspace file names
            # the project folder as the code's working directory.
            command, cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_reset_signals,
        )
    return DagsterProcess(process, f"http://{host}:{port}", log_path)
