"""The application shell: the `pilito-pipeline` CLI, `up` (Dagster on the pipeline's database), the
demo, the status page text and the Prometheus exporter. Nothing below it imports it."""
