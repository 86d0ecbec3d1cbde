"""Fixtures of the Dagster layer's tests (instance, resources, the sample site), and the daemon's
work for a registered site without the page runs' checks (they are the checks tests' subject)."""

from __future__ import annotations

from typing import Any

import dagster as dg

from pilito_pipeline.defs.crawl_assets import website_crawl
from pilito_pipeline.defs.sensors import pending_pages_sensor, website_crawl_sensor
from pilito_pipeline_tests.defs.conftest import PAGE_ASSETS, demo_site, instance, resources  # noqa: F401


def crawl_and_process(instance: dg.DagsterInstance, resources: dict[str, Any]) -> None:  # noqa: F811
    """What the daemon does for registered sites: the sensors' runs, executed here."""
    context = dg.build_sensor_context(instance=instance, resources={"database": resources["database"]})
    result = website_crawl_sensor(context)
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    for request in result.run_requests:
        assert dg.materialize([website_crawl], partition_key=request.partition_key, instance=instance,
                              resources=resources, tags=request.tags).success
    cursor = None
    for _ in range(50):  # the daemon's ticks, until the pages sensor has nothing left to launch
        context = dg.build_sensor_context(
            instance=instance, cursor=cursor,
            resources={"database": resources["database"], "embedder": resources["embedder"]})
        result = pending_pages_sensor(context)
        if not result.run_requests:
            return
        for request in result.run_requests:
            assert dg.materialize(PAGE_ASSETS, instance=instance, resources=resources, tags=request.tags).success
        cursor = result.cursor
    raise AssertionError("the pages sensor kept launching runs")
