"""Dynamic partitions: one per registered website, one per crawled page (keys `w<id>` / `p<id>`).

Keys derive from database ids, never raw URLs, so they are short, stable and free of commas and
`...`. Pages registered together get contiguous keys, which lets one run cover a range of them.
"""

import dagster as dg

websites_partitions = dg.DynamicPartitionsDefinition(name="websites")
pages_partitions = dg.DynamicPartitionsDefinition(name="pages")

TENANT_TAG = "pilito/tenant"
"""Run tag carrying the tenant: dagster.yaml limits concurrent runs per unique value."""
