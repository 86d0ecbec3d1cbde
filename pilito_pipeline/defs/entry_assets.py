"""Manual and FAQ entries after an embedding-model change: re-embedded from their stored chunks.

Website pages become pending when the model changes (their page runs re-embed them); manual and
FAQ text has no crawl behind it, so this asset re-embeds it and the sensor launches it whenever
some entry's chunks are not of the configured model. Dense search compares only vectors of the
configured model, so until this ran those entries are found by BM25 alone, never mis-ranked.

Entry runs never overlap: the sensor launches none while one is queued or running, and the run
queue runs one `pilito/run_kind: maintenance` run at a time (dagster.yaml). An entry edited while it
is re-embedded keeps the edit (`reembed_entries` compares and sets).
"""

import time

import dagster as dg

from pilito_pipeline.defs.partitions import maintenance_run_tags, refuse_unless_maintenance_run
from pilito_pipeline.defs.resources import DatabaseResource, EmbeddingResource
from pilito_pipeline.defs.sensors import ACTIVE_STATUSES
from pilito_pipeline.ingest.sources import reembed_entries, stale_entries

ENTRY_RUN_TAGS = maintenance_run_tags("entries")


@dg.asset(group_name="knowledge", kinds={"pgvector"})
def entry_embeddings(
    context: dg.AssetExecutionContext, database: DatabaseResource, embedder: EmbeddingResource
) -> dg.MaterializeResult:
    """Manual and FAQ chunks embedded by the configured model (in `entry_embeddings_job`)."""
    refuse_unless_maintenance_run(context.run.tags, "entry_embeddings_job")

    provider = embedder.get_provider()
    chunks = 0
    done: set[tuple[str, str, str]] = set()
    changed: set[tuple[str, str, str]] = set()
    with database.connect() as conn:
        conn.autocommit = True  # no transaction held through the embedding; each write has its own
        while keys := [key for key in stale_entries(conn, provider.model_name) if key not in changed]:
            if done.issuperset(keys):
                raise dg.Failure(f"entries still not embedded by {provider.model_name} after a pass: {keys[:5]}")
            result = reembed_entries(conn, provider, keys)
            chunks += result.chunks
            done.update(result.entries)
            changed.update(result.changed)
            context.log.info(f"re-embedded {len(done)} entries ({chunks} chunks) with {provider.model_name}")
    if changed:
        context.log.warning(f"{len(changed)} entries were edited while being re-embedded and keep the edit:"
                            f" {sorted(changed)[:10]}")
    return dg.MaterializeResult(
        metadata={"entries": len(done), "chunks_written": chunks, "entries_edited_meanwhile": len(changed),
                  "model": provider.model_name}
    )


entry_embeddings_job = dg.define_asset_job(
    "entry_embeddings_job", selection=[entry_embeddings], tags=ENTRY_RUN_TAGS,
    description="Re-embed manual and FAQ entries, under the maintenance queue limit.",
)


@dg.sensor(
    job=entry_embeddings_job,
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
    if context.instance.get_runs(filters=dg.RunsFilter(statuses=ACTIVE_STATUSES, tags=ENTRY_RUN_TAGS), limit=1):
        return dg.SensorResult(skip_reason="an entry run is queued or running; it re-embeds every stale entry")
    window = int(time.time() // 3600)  # a failed run is launched again in the next window
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"entries:{model}:{window}", tags=ENTRY_RUN_TAGS)])
