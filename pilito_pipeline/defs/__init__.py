"""The Dagster layer: partitions, assets, sensors, resources, IO managers and checks over the plain
Python packages below it. `pilito_pipeline.definitions` assembles them."""
