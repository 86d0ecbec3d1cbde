"""The recovery tests' stack (pilito_pipeline_tests/dagster_stack.py) with what they break on top:
its own redis-server on a free loopback port, the fake OpenAI embeddings server, small sites whose
pages can be held back, and run monitoring polling every few seconds so faults are found quickly."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pilito_pipeline_tests.dagster_stack import FAST_RUN_MONITORING, Site, Stack, dagster_stack, site_factory
from pilito_pipeline_tests.embed.openai_server import running_server

EMBEDDING_MODEL = "text-embedding-3-small"


@pytest.fixture
def make_site() -> Iterator[Callable[..., Site]]:
    with site_factory() as make:
        yield make


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    # Not under pytest's basetemp: other pytest sessions on the machine prune old basetemps, and this
    # folder holds a running stack's data.
    data_dir = Path(tempfile.mkdtemp(prefix="pilito-recovery-"))
    try:
        with running_server() as embeddings:
            env = {
                "EMBEDDING_PROVIDER": "openai",
                "EMBEDDING_MODEL": EMBEDDING_MODEL,
                "EMBEDDING_DIMENSION": "384",
                "OPENAI_API_KEY": "sk-test-recovery",
                "OPENAI_BASE_URL": embeddings.url,
                "CRAWL_ALLOWED_HOSTS": "127.0.0.1",
                "CRAWL_RATE_LIMIT_SECONDS": "0.05",
                "HF_HUB_OFFLINE": "1",
            }
            with dagster_stack(data_dir, env, run_monitoring=FAST_RUN_MONITORING, own_redis=True) as stack:
                stack.embeddings = embeddings
                try:
                    yield stack
                finally:
                    embeddings.admitted.set()  # nothing left waiting on a held-back answer
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
