"""Every retry of the pipeline, decided here. README ("Retries") states the same numbers.

Against a failing embedding provider (HTTP 408/409/429/5xx, timeouts, refused connections):
- the OpenAI client tries each request `PROVIDER_ATTEMPTS_PER_REQUEST` times (backoff, Retry-After);
- the `chunk_embeddings` step is tried `EMBEDDING_STEP_ATTEMPTS` times (its RetryPolicy);
so one page-run attempt makes at most `PROVIDER_ATTEMPTS_PER_RUN_ATTEMPT` calls for the failing
request (and the circuit breaker, shared through Redis, stops calls earlier across runs).
A refused request (400, 401, 403, 404, 422: bad key or input) is one call: no client retry, no step
retry, no run retry. A refused key or model (401, 403, 404) fails the run
(`Failure(allow_retries=False)`); a refused input (400, 422) fails only the pages holding it.

Run retries (dagster.yaml `run_retries`) re-execute only runs that died without a step failure
(a killed worker, a lost database): `RUN_RETRIES` more attempts, `retry_on_asset_or_op_failure:
false`. A step failure is final for its run. Page and crawl runs are tagged
`dagster/max_retries: 0`: the pages sensor launches a failed run's pages again later, and
`dead_run_sensor` requests a dead crawl again (a run retry as well would crawl twice).

A page that fails alone (its chunking raises, the provider refuses its texts) costs only itself: its run stores the other pages, and the page is tried again after
`PAGE_RETRY_DELAY_SECONDS`, doubling with each failure, and quarantined at its
`PAGE_ATTEMPTS`-th failure (about 7 minutes after the first) until `pilito-pipeline retry-pages`.
"""

from __future__ import annotations

OPENAI_CLIENT_RETRIES = 2
EMBEDDING_STEP_RETRIES = 2
EMBEDDING_STEP_RETRY_DELAY_SECONDS = 10
"""First wait between step attempts; doubles each time (with jitter)."""
RUN_RETRIES = 1
"""dagster.yaml run_retries.max_retries (a test keeps them equal)."""

PROVIDER_ATTEMPTS_PER_REQUEST = 1 + OPENAI_CLIENT_RETRIES
EMBEDDING_STEP_ATTEMPTS = 1 + EMBEDDING_STEP_RETRIES
PROVIDER_ATTEMPTS_PER_RUN_ATTEMPT = PROVIDER_ATTEMPTS_PER_REQUEST * EMBEDDING_STEP_ATTEMPTS

PAGE_ATTEMPTS = 4
"""Failed attempts of one page (same text and model) before it is quarantined."""
PAGE_RETRY_DELAY_SECONDS = 60
"""Wait after a page's first failure; doubles with each further failure (60 s, 120 s, 240 s)."""
