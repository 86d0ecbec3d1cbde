"""Ingestion metrics for Prometheus, read from Dagster's event log and run records.

Runs execute in other processes (or containers, or pods), so counters kept in a run would die with
it. The exporter instead reads what every run already records in the Dagster instance, the
materialisation metadata of `website_crawl` and `chunk_embeddings` (with the knowledge IO
manager's upsert counts) and the finished runs, and turns it into counters on each scrape (from a
cursor: each event is counted once). Started fresh, it counts the instance's whole history, so a
restart is not a reset. Labels are bounded (outcome, action, kind, status): never a tenant id.

Metric names follow the seeds where they had one (`crawl_total`, `crawl_pages_total`,
`page_process_total`, `chunks_created_total`).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta

import dagster as dg
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

CRAWL_ASSET = dg.AssetKey("website_crawl")
CHUNKS_ASSET = dg.AssetKey("page_chunks")
EMBEDDINGS_ASSET = dg.AssetKey("chunk_embeddings")
UPSERT_ACTIONS = ("inserted", "updated", "unchanged", "deleted")
FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, float("inf"))
PAGE_RANGE_TAG = "dagster/asset_partition_range_start"


def run_kind(run: dg.DagsterRun) -> str:
    """crawl (a website partition), pages (a page range), or the job's name (operator jobs)."""
    if run.tags.get("dagster/partition", "").startswith("w"):
        return "crawl"
    if PAGE_RANGE_TAG in run.tags or run.tags.get("dagster/partition", "").startswith("p"):
        return "pages"
    return run.job_name


class IngestionCollector(Collector):
    """A Prometheus collector over one Dagster instance; register it on a registry and scrape."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.instance = instance
        self._lock = threading.Lock()
        self._cursors: dict[dg.AssetKey, str | None] = {CRAWL_ASSET: None, CHUNKS_ASSET: None, EMBEDDINGS_ASSET: None}
        self._counts: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
        self._page_runs: set[tuple[dg.AssetKey, str]] = set()
        self._finished_runs: set[str] = set()
        self._runs_since: datetime | None = None
        self._durations: dict[tuple[str, str], list[float]] = {}

    def _add(self, name: str, value: float, **labels: str) -> None:
        self._counts[(name, tuple(sorted(labels.items())))] += value

    def _catch_up_materializations(self, key: dg.AssetKey) -> None:
        while True:
            result = self.instance.fetch_materializations(key, limit=500, cursor=self._cursors[key], ascending=True)
            for record in result.records:
                metadata = {name: value.value for name, value in record.asset_materialization.metadata.items()}
                if key == CRAWL_ASSET:
                    self._count_crawl(metadata)
                elif (key, record.run_id) not in self._page_runs:  # one event per page, same run metadata
                    self._page_runs.add((key, record.run_id))
                    self._count_page_failures(metadata)
                    if key == EMBEDDINGS_ASSET:
                        self._count_page_run(metadata)
            self._cursors[key] = result.cursor
            if not result.has_more:
                return

    def _count_crawl(self, metadata: dict[str, object]) -> None:
        for name, value in metadata.items():
            if name.startswith("pages_") and isinstance(value, int) and name != "pages_per_second":
                self._add("crawl_pages", value, outcome=name.removeprefix("pages_"))

    def _count_page_failures(self, metadata: dict[str, object]) -> None:
        """Pages that failed alone (chunking in `page_chunks`, a refused embedding in
        `chunk_embeddings`), and those of them quarantined."""
        self._add("page_process", int(metadata.get("pages_failed", 0)), status="failed")
        self._add("pages_quarantined", int(metadata.get("pages_quarantined", 0)))

    def _count_page_run(self, metadata: dict[str, object]) -> None:
        self._add("page_process", int(metadata.get("pages", 0)), status="success")
        self._add("embeddings_computed", int(metadata.get("embeddings_computed", 0)))
        self._add("embeddings_reused", int(metadata.get("embeddings_reused", 0)))
        self._add("chunks_created", int(metadata.get("rows_inserted", 0)), chunk_type="website")
        for action in UPSERT_ACTIONS:
            self._add("knowledge_upsert_rows", int(metadata.get(f"rows_{action}", 0)), action=action)

    def _catch_up_runs(self) -> None:
        since = self._runs_since
        records = self.instance.get_run_records(
            filters=dg.RunsFilter(statuses=FINISHED, updated_after=since - timedelta(minutes=5) if since else None),
            order_by="update_timestamp", ascending=True,
        )
        for record in records:
            run = record.dagster_run
            self._runs_since = max(self._runs_since or record.update_timestamp, record.update_timestamp)
            if run.run_id in self._finished_runs:
                continue
            self._finished_runs.add(run.run_id)
            kind, status = run_kind(run), run.status.value.lower()
            if kind == "crawl":
                self._add("crawl", 1, status=status)
            if record.start_time and record.end_time:
                self._durations.setdefault((kind, status), []).append(record.end_time - record.start_time)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            for key in self._cursors:
                self._catch_up_materializations(key)
            self._catch_up_runs()
            counts = dict(self._counts)
            durations = {key: list(values) for key, values in self._durations.items()}
        families = {
            "crawl": CounterMetricFamily("crawl", "Website crawl runs finished, by run status", labels=["status"]),
            "crawl_pages": CounterMetricFamily("crawl_pages", "Pages crawled, by outcome", labels=["outcome"]),
            "page_process": CounterMetricFamily(
                "page_process", "Pages chunked and embedded (success) or failed alone (failed)", labels=["status"]),
            "pages_quarantined": CounterMetricFamily(
                "pages_quarantined", "Pages quarantined after their last failed attempt (until retry-pages)"),
            "embeddings_computed": CounterMetricFamily("embeddings_computed", "Embeddings computed by the provider"),
            "embeddings_reused": CounterMetricFamily("embeddings_reused", "Embeddings reused (text and model unchanged)"),
            "chunks_created": CounterMetricFamily("chunks_created", "Knowledge chunks created", labels=["chunk_type"]),
            "knowledge_upsert_rows": CounterMetricFamily(
                "knowledge_upsert_rows", "Knowledge rows by upsert action (unchanged: not written)", labels=["action"]),
        }
        for (name, labels), value in sorted(counts.items()):
            families[name].add_metric([v for _, v in labels], value)
        yield from families.values()
        histogram = HistogramMetricFamily(
            "pilito_run_duration_seconds", "Duration of finished runs", labels=["kind", "status"])
        for (kind, status), values in sorted(durations.items()):
            buckets = [("+Inf" if bound == float("inf") else str(bound), sum(1 for v in values if v <= bound))
                       for bound in DURATION_BUCKETS]
            histogram.add_metric([kind, status], buckets, sum(values))
        yield histogram


def ingestion_registry(instance: dg.DagsterInstance) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(IngestionCollector(instance))
    return registry


def serve_ingestion_metrics(instance: dg.DagsterInstance, port: int, host: str = "0.0.0.0"):
    """Serve `/metrics` for `instance` in a background thread; returns (server, thread)."""
    return start_http_server(port, addr=host, registry=ingestion_registry(instance))

