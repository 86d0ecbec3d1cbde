"""Index maintenance: a tenant that needs its own ANN indexes without a page run to notice (here: a
lowered threshold, as after migrating existing data) gets them through the sensor and asset."""

from typing import Any

import dagster as dg
import pytest

from pilito_pipeline.defs.maintenance import ANN_RUN_TAGS, ann_index_sensor, tenant_ann_indexes
from pilito_pipeline.defs.resources import DatabaseResource
from pilito_pipeline.store.db import connect
from pilito_pipeline_tests.defs.conftest import register, run_sensors_and_runs

pytestmark = pytest.mark.slow


def test_sensor_launches_index_maintenance_only_when_needed(
    database_url: str, demo_site: str, instance: dg.DagsterInstance, resources: dict[str, Any]
) -> None:
    register(database_url, "acme", demo_site)
    run_sensors_and_runs(instance, resources)  # default threshold: far too few chunks for an index
    database = DatabaseResource(database_url=database_url, ann_index_min_chunks=10)

    def evaluate() -> dg.SensorResult:
        return ann_index_sensor(dg.build_sensor_context(instance=instance, resources={"database": database}))

    (request,) = evaluate().run_requests
    assert request.tags == ANN_RUN_TAGS  # the maintenance queue limit's tags
    # The asset materialized from the catalog (no tags) is refused: it would take a crawl's or page run's slot.
    refused = dg.materialize([tenant_ann_indexes], instance=instance, resources={"database": database},
                             raise_on_error=False)
    assert not refused.success
    (failure,) = [e for e in refused.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert "tenant_ann_indexes_job" in failure.step_failure_data.user_failure_data.description
    outcome = dg.materialize([tenant_ann_indexes], instance=instance, resources={"database": database},
                             tags=request.tags)
    assert outcome.success
    with connect(database_url) as conn:
        assert [r["tenant_id"] for r in conn.execute("SELECT tenant_id FROM tenant_ann_indexes")] == ["acme"]
    assert not evaluate().run_requests
