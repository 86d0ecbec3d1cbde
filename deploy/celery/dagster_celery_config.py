"""What a Celery run worker reads (`dagster_celery.app` imports this module when it is on the path):
the Redis the pipeline already uses, as broker and result store (deploy/celery/run_launcher.yaml).

A worker takes one run at a time (`--pool solo`: the run executes in the worker's own process, which
stays up, so Dagster and the project are imported once) and reserves no second run meanwhile, so a
free worker, here or on another machine, takes it.
"""

import os

broker_url = os.environ["REDIS_URL"]
result_backend = os.environ["REDIS_URL"]
worker_prefetch_multiplier = 1
