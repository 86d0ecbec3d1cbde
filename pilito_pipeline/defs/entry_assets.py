"""Manual and FAQ entries after an embedding-model change: re-embedded from their stored chunks.

Website pages become pending when the model changes (their page runs re-embed them); manual and
FAQ text has no crawl behind it, so this asset re-embeds it and the sensor launches it whenever
some entry's chunks are not of the configured model. Dense search compares only vectors of the
configured model, so until this ran those entries are found by BM25 alone, never mis-ranked.
"""

import time

import dagster as dg

from pilito_pipeline.defs.resources import DatabaseResource, EmbeddingResource
from pilito_pipeline.ingest import reembed_entries, stale_entries


@dg.asset(group_name="knowledge", kinds={"pgvector"})
def entry_embeddings(
    context: dg.AssetExecutionContext, database: DatabaseResource, embedder: EmbeddingResource
) -> dg.MaterializeResult:
    """Manual and FAQ chunks embedded by the configured model."""
    provider = embedder.get_provider()
    entries = chunks = 0
    done: set[tuple[str, str, str]] = set()
    with database.connect() as conn:
        while keys := stale_entries(conn, provider.model_name):
            if done.issuperset(keys):
                raise dg.Failure(f"entries still not embedded by {provider.model_name} after a pass: {keys[:5]}")
            chunks += reembed_entries(conn, provider, keys)
            entries += len(keys)
            done.update(keys)
            context.log.info(f"re-embedded {entries} entries ({chunks} chunks) with {provider.model_name}")
    return dg.MaterializeResult(
        metadata={"entries": entries, "chunks_written": chunks, "model": provider.model_name}
    )


@dg.sensor(
    asset_selection=[entry_embeddings],
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Re-embed manual and FAQ entries whose chunks are not of the configured embedding model.",
)
def stale_entries_sensor(
    context: dg.SensorEvaluationContext, database: DatabaseResource, embedder: EmbeddingResource
) -> dg.SensorResult:
    model = embedder.model_name
    with database.connect() as conn:
        stale = stale_entries(conn, model, limit=1)
    if not stale:
        return dg.SensorResult(skip_reason=f"every manual and FAQ entry is embedded by {model}")
    window = int(time.time() // 3600)  # a failed run is launched again in the next window
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"entries:{model}:{window}")])
