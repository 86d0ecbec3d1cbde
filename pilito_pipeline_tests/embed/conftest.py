from __future__ import annotations

from collections.abc import Iterator

import pytest

from pilito_pipeline_tests.embed.openai_server import EmbeddingServer, running_server


@pytest.fixture
def embedding_server() -> Iterator[EmbeddingServer]:
    with running_server() as server:
        yield server
