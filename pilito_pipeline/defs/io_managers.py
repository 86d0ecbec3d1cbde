"""IO managers: intermediate page values in Postgres, and idempotent knowledge upserts into pgvector.

Both receive one or many page partitions per run (range runs) as a dict keyed by page key.
"""


from typing import Any

import dagster as dg

from pilito_pipeline.defs.resources import DatabaseResource
from pilito_pipeline.store.ann_indexes import ensure_tenant_ann_index
from pilito_pipeline.store.asset_values import load_values, save_values
from pilito_pipeline.store.knowledge import KnowledgeRow, load_sources, upsert_sources
from pilito_pipeline.store.pages import mark_pages_processed, page_tenants


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


class KnowledgeIOManager(dg.ConfigurableIOManager):
    """Writes a run's pages into `tenant_knowledge` in one transaction.

    Each page ends with exactly its current chunks (changed rows updated, unchanged rows untouched,
    vanished chunk positions deleted) and is marked processed for the content hash it was built from
    and embedding model, atomically: a crash leaves the previous state, a rerun converges.
    """

    database: dg.ResourceDependency[DatabaseResource]

    def handle_output(self, context: dg.OutputContext, obj: dict[str, Any]) -> None:
        rows_by_source = {(pk.tenant_id, "website", key): pk.rows for key, pk in obj.items()}
        tenants = sorted({pk.tenant_id for pk in obj.values()})
        by_model: dict[str, dict[str, str]] = {}
        for key, pk in obj.items():
            by_model.setdefault(pk.embedding_model, {})[key] = pk.content_hash
        with self.database.connect() as conn:
            with conn.transaction():
                stats = upsert_sources(conn, rows_by_source)
                for model, processed in by_model.items():
                    mark_pages_processed(conn, processed, model)
        # A tenant that grew past the exact-search size gets its own ANN indexes (built
        # concurrently, outside the write transaction); small tenants never pay HNSW upkeep.
        ann_indexes = {
            tenant: ensure_tenant_ann_index(self.database.url, tenant, min_chunks=self.database.ann_index_min_chunks)
            for tenant in tenants
        }
        context.add_output_metadata(
            {
                "ann_indexes": ", ".join(f"{t}: {name or 'exact search'}" for t, name in ann_indexes.items()),
                "rows_inserted": stats.inserted,
                "rows_updated": stats.updated,
                "rows_unchanged": stats.unchanged,
                "rows_deleted": stats.deleted,
            }
        )

    def load_input(self, context: dg.InputContext) -> dict[str, list[KnowledgeRow]]:
        """The stored chunks of each requested page."""
        with self.database.connect() as conn:
            tenants = page_tenants(conn, _partition_keys(context))
            stored = load_sources(conn, [(tenant, "website", key) for key, tenant in tenants.items()])
        return {source_id: rows for (_, _, source_id), rows in stored.items()}
