"""The one Definitions object Dagster loads (workspace.yaml / `dagster dev -m pilito_pipeline.definitions`)."""

import dagster as dg

from pilito_pipeline.defs.resources_from_env import resources_from_settings
from pilito_pipeline.defs import (
    checks, crawl_assets, entry_assets, maintenance, operator_jobs, page_assets, recovery, sensors,
)

defs = dg.Definitions(
    assets=[*dg.load_assets_from_modules([crawl_assets, page_assets, maintenance, entry_assets]), checks.knowledge_base],
    asset_checks=dg.load_asset_checks_from_modules([checks]),
    jobs=[operator_jobs.register_website_job, checks.knowledge_audit_job, maintenance.tenant_ann_indexes_job,
          maintenance.tenant_term_vectors_job, entry_assets.entry_embeddings_job],
    schedules=[checks.knowledge_audit_schedule],
    sensors=[sensors.website_crawl_sensor, sensors.pending_pages_sensor, maintenance.ann_index_sensor,
             maintenance.term_vector_sensor, recovery.dead_run_sensor, entry_assets.stale_entries_sensor],
    resources=resources_from_settings(),
    executor=dg.in_process_executor,
)
