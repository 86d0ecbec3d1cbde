"""The IO manager of the intermediate page assets: their values in Postgres, stored and loaded.

It receives one or many page partitions per run (range runs) as a dict keyed by page key. It only
stores and loads: `chunk_embeddings` writes the knowledge base and advances page state itself (one
transaction), and ANN indexes are the `tenant_ann_indexes` asset's job.
"""


from typing import Any

import dagster as dg

from pilito_pipeline.defs.resources import DatabaseResource
from pilito_pipeline.store.asset_values import load_values, save_values


def _partition_keys(context: dg.OutputContext | dg.InputContext) -> list[str]:
    return list(context.asset_partition_keys) if context.has_asset_partitions else []


class PageValuesIOManager(dg.ConfigurableIOManager):
    """Pickled per-page values in the `asset_values` table."""

    database: dg.ResourceDependency[DatabaseResource]

    def handle_output(self, context: dg.OutputContext, obj: dict[str, Any]) -> None:
        with self.database.connect() as conn:
            save_values(conn, context.asset_key.to_user_string(), obj)

    def load_input(self, context: dg.InputContext) -> dict[str, Any]:
        with self.database.connect() as conn:
            return load_values(conn, context.asset_key.to_user_string(), _partition_keys(context))
