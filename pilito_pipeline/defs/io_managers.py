"""The IO manager of the intermediate page assets: `page_chunks`' values, kept in the run's memory.

A page run's steps execute in one process (`definitions.py`: the in-process executor), so the chunks
`page_chunks` makes are handed to `chunk_embeddings` in memory and never written anywhere: `pages`
holds the one stored copy of a page's document, `tenant_knowledge` its chunks. Each run gets its
own manager (a fresh one per run's resources), so nothing outlives the run. A step that loads a
value its run did not make (`chunk_embeddings` materialized alone) gets none: an empty dict.
"""


from typing import Any

import dagster as dg


class RunValuesIOManager(dg.IOManager):
    """One run's intermediate values by asset key (each a dict keyed by page key)."""

    def __init__(self) -> None:
        self._values: dict[dg.AssetKey, dict[str, Any]] = {}

    def handle_output(self, context: dg.OutputContext, obj: dict[str, Any]) -> None:
        self._values[context.asset_key] = obj

    def load_input(self, context: dg.InputContext) -> dict[str, Any]:
        return self._values.get(context.asset_key, {})


@dg.io_manager(description="page_chunks' values in the run's memory: handed to chunk_embeddings, never stored.")
def run_values_io_manager() -> RunValuesIOManager:
    return RunValuesIOManager()
