"""Asset checks beside `chunk_embeddings`: the knowledge table stays exactly-once and complete.

They query the whole table (cheap aggregate scans) after each page run, so an operator sees in the
UI the moment anything drifts: duplicates, chunks of gone pages, wrong embeddings, empty pages.
"""


from collections.abc import Callable

import dagster as dg
import psycopg

from pilito_pipeline.defs.page_assets import chunk_embeddings
from pilito_pipeline.defs.resources import DatabaseResource, EmbeddingResource
from pilito_pipeline.store import checks as store_checks
from pilito_pipeline.store.pages import count_chunks_without_live_page


def _zero(database: DatabaseResource, count: Callable[[psycopg.Connection], int], what: str) -> dg.AssetCheckResult:
    with database.connect() as conn:
        found = count(conn)
    return dg.AssetCheckResult(
        passed=found == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"{found} {what}" if found else None,
        metadata={"count": found},
    )


@dg.asset_check(asset=chunk_embeddings, description="No chunk position is stored twice.")
def no_duplicate_chunks(database: DatabaseResource) -> dg.AssetCheckResult:
    return _zero(database, store_checks.count_duplicate_chunks, "duplicated chunk positions")


@dg.asset_check(asset=chunk_embeddings, description="No website chunk outlives its page.")
def no_orphan_chunks(database: DatabaseResource) -> dg.AssetCheckResult:
    return _zero(database, store_checks.count_orphan_chunks, "chunks whose page is missing or gone")


@dg.asset_check(asset=chunk_embeddings, description="Every searchable chunk is embedded by the configured model and dimension.")
def embeddings_match_model(database: DatabaseResource, embedder: EmbeddingResource) -> dg.AssetCheckResult:
    model, dimension = embedder.model_name, embedder.dimension  # known without loading the model
    return _zero(
        database,
        lambda conn: store_checks.count_embedding_mismatches(conn, model, dimension),
        f"chunks not embedded by {model} ({dimension}-d)",
    )


@dg.asset_check(asset=chunk_embeddings, description="Every page processed for its current text has chunks.")
def processed_pages_have_chunks(database: DatabaseResource) -> dg.AssetCheckResult:
    return _zero(database, store_checks.count_completed_pages_without_chunks, "processed pages without chunks")


@dg.asset_check(asset=chunk_embeddings, description="No website chunk belongs to a page that is not live (gone, skipped, missing).")
def no_chunks_of_removed_pages(database: DatabaseResource) -> dg.AssetCheckResult:
    with database.connect() as conn:
        found = count_chunks_without_live_page(conn)
    return dg.AssetCheckResult(
        passed=found == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"{found} chunks whose page is not live" if found else None,
        metadata={"count": found},
    )
