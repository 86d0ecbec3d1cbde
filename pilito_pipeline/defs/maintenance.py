"""Index maintenance: the one place ANN indexes are built or dropped, and tenants' English
vocabulary vectors (cross-lingual query translation) are kept up to date.

Page runs only write rows (small tenants never pay HNSW upkeep); the sensor notices tenants whose
size crossed the ANN threshold either way (after page runs, deletions, or migration 0005 on
existing data) and launches `tenant_ann_indexes`, which builds CONCURRENTLY outside any write
transaction. Until a tenant's indexes are valid, retrieval searches it exactly."""

import time

import dagster as dg

from pilito_pipeline.defs.partitions import maintenance_run_tags, refuse_unless_maintenance_run
from pilito_pipeline.defs.resources import DatabaseResource, EmbeddingResource
from pilito_pipeline.ingest.term_vectors import refresh_term_vectors
from pilito_pipeline.store.ann_indexes import ensure_tenant_ann_index, tenants_needing_ann_index
from pilito_pipeline.store.db import connect
from pilito_pipeline.store.term_vectors import tenants_needing_term_vectors


@dg.asset(group_name="maintenance", kinds={"pgvector"})
def tenant_ann_indexes(context: dg.AssetExecutionContext, database: DatabaseResource) -> dg.MaterializeResult:
    """Per-tenant partial HNSW indexes in line with every tenant's size (in `tenant_ann_indexes_job`)."""
    refuse_unless_maintenance_run(context.run.tags, "tenant_ann_indexes_job")
    with connect(database.url) as conn:
        tenants = tenants_needing_ann_index(conn, database.ann_index_min_chunks)
    outcome = {}
    for tenant in tenants:
        started = time.perf_counter()
        outcome[tenant] = ensure_tenant_ann_index(database.url, tenant, min_chunks=database.ann_index_min_chunks)
        context.log.info(f"{tenant}: {outcome[tenant] or 'exact search'} ({time.perf_counter() - started:.1f}s)")
    return dg.MaterializeResult(
        metadata={
            "tenants": len(tenants),
            "indexed": ", ".join(t for t, name in outcome.items() if name) or "none",
            "exact": ", ".join(t for t, name in outcome.items() if not name) or "none",
        }
    )


ANN_RUN_TAGS = maintenance_run_tags("ann_indexes")
tenant_ann_indexes_job = dg.define_asset_job(
    "tenant_ann_indexes_job", selection=[tenant_ann_indexes], tags=ANN_RUN_TAGS,
    description="Build or drop tenants' ANN indexes, under the maintenance queue limit.",
)


@dg.sensor(
    job=tenant_ann_indexes_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Launch index maintenance when a tenant needs its ANN indexes built, repaired or dropped.",
)
def ann_index_sensor(context: dg.SensorEvaluationContext, database: DatabaseResource) -> dg.SensorResult:
    with connect(database.url) as conn:
        tenants = tenants_needing_ann_index(conn, database.ann_index_min_chunks)
    if not tenants:
        return dg.SensorResult(skip_reason="every tenant's ANN indexes match its size")
    window = int(time.time() // 3600)
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"ann:{'+'.join(sorted(tenants))}:{window}", tags=ANN_RUN_TAGS)]
    )


@dg.asset(group_name="maintenance", kinds={"pgvector"})
def tenant_term_vectors(context: dg.AssetExecutionContext, database: DatabaseResource,
                        embedder: EmbeddingResource) -> dg.MaterializeResult:
    """Tenants' English vocabulary vectors, for Persian questions about English pages
    (`retrieval/translate.py`; in `tenant_term_vectors_job`)."""
    refuse_unless_maintenance_run(context.run.tags, "tenant_term_vectors_job")
    with connect(database.url, autocommit=True) as conn:
        tenants = tenants_needing_term_vectors(conn, embedder.model_name)
        embedded = {}
        for tenant in tenants:
            started = time.perf_counter()
            embedded[tenant] = refresh_term_vectors(conn, tenant, embedder.get_provider())
            context.log.info(f"{tenant}: {embedded[tenant]} new terms ({time.perf_counter() - started:.1f}s)")
    return dg.MaterializeResult(metadata={"tenants": len(tenants), "terms_embedded": sum(embedded.values())})


TERM_VECTOR_RUN_TAGS = maintenance_run_tags("term_vectors")
tenant_term_vectors_job = dg.define_asset_job(
    "tenant_term_vectors_job", selection=[tenant_term_vectors], tags=TERM_VECTOR_RUN_TAGS,
    description="Embed tenants' new English vocabulary terms, under the maintenance queue limit.",
)


@dg.sensor(
    job=tenant_term_vectors_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Launch vocabulary upkeep when a tenant's English pages changed since its last refresh.",
)
def term_vector_sensor(context: dg.SensorEvaluationContext, database: DatabaseResource,
                       embedder: EmbeddingResource) -> dg.SensorResult:
    if not embedder.to_settings().embedding_covers("fa"):
        return dg.SensorResult(skip_reason=f"{embedder.model_name} does not embed Persian: no query to translate")
    with connect(database.url) as conn:
        tenants = tenants_needing_term_vectors(conn, embedder.model_name)
    if not tenants:
        return dg.SensorResult(skip_reason="every tenant's English vocabulary is up to date")
    window = int(time.time() // 3600)
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"terms:{'+'.join(sorted(tenants))}:{window}", tags=TERM_VECTOR_RUN_TAGS)]
    )
