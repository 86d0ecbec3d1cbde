"""Knowledge-base checks: run-scoped checks beside `chunk_embeddings`, and a scheduled full audit.

`knowledge_run_checks` runs with every page run and looks only at that run's pages (and, for
their chunks, their tenant): its cost follows the run, not the table, and another tenant's drift
cannot fail it. `knowledge_audit` applies the same rules to the whole table (every tenant, manual
and FAQ chunks too), on a schedule, and names the tenants that drift.
"""

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import dagster as dg
import psycopg

from pilito_pipeline.defs.page_assets import chunk_embeddings
from pilito_pipeline.defs.partitions import maintenance_run_tags, pages_partitions
from pilito_pipeline.defs.resources import DatabaseResource, EmbeddingResource
from pilito_pipeline.store import checks as store_checks

Counter = Callable[[psycopg.Connection, Sequence[str] | None, EmbeddingResource], dict[str, int]]


@dataclass(frozen=True)
class KnowledgeRule:
    name: str
    description: str
    found: str
    """What a non-zero count counts."""
    count: Counter
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR


RULES = (
    KnowledgeRule(
        "chunk_sets_complete",
        "Each page's chunks are positions 0..n-1, each once, all saying n chunks (no lost or leftover chunk).",
        "pages with an incomplete chunk set",
        lambda conn, pages, _: store_checks.incomplete_chunk_sets(conn, pages),
    ),
    KnowledgeRule(
        "no_chunks_of_removed_pages",
        "No website chunk belongs to a page that is not live (gone, skipped, missing, another tenant's).",
        "chunks whose page is not live",
        lambda conn, pages, _: store_checks.chunks_without_live_page(conn, pages),
    ),
    KnowledgeRule(
        "embeddings_match_model",
        "Every searchable chunk is embedded by the configured model and dimension.",
        "chunks not embedded by the configured model",
        lambda conn, pages, embedder: store_checks.embedding_mismatches(  # known without loading the model
            conn, pages, embedder.model_name, embedder.dimension, tldr=embedder.embed_tldr),
    ),
    KnowledgeRule(
        "processed_pages_have_chunks",
        "Every page processed for its current text has chunks.",
        "processed pages without chunks",
        lambda conn, pages, _: store_checks.processed_pages_without_chunks(conn, pages),
    ),
    KnowledgeRule(
        "no_quarantined_pages",
        "No page of the tenant is quarantined: a page that failed alone `retries.PAGE_ATTEMPTS` times waits"
        " for `pilito-pipeline retry-pages --tenant T` (its reason: `pilito-pipeline status`).",
        "quarantined pages",
        lambda conn, pages, embedder: store_checks.quarantined_pages(conn, pages, embedder.model_name),
        dg.AssetCheckSeverity.WARN,
    ),
)


def evaluate_rules(
    database: DatabaseResource, embedder: EmbeddingResource, pages: Sequence[str] | None
) -> Iterator[dg.AssetCheckResult]:
    """One result per rule over `pages` (None: the whole table), with the drifting tenants."""
    with database.connect() as conn:
        for rule in RULES:
            found = rule.count(conn, pages, embedder)
            total = sum(found.values())
            yield dg.AssetCheckResult(
                check_name=rule.name,
                passed=total == 0,
                severity=rule.severity,
                description=f"{total} {rule.found}" if total else None,
                metadata={
                    "count": total,
                    "tenants": ", ".join(f"{tenant}: {n}" for tenant, n in sorted(found.items())) or "none",
                    "pages_checked": "all" if pages is None else len(pages),
                },
            )


@dg.multi_asset_check(
    specs=[dg.AssetCheckSpec(rule.name, asset=chunk_embeddings, description=rule.description) for rule in RULES],
    description="The run's pages only (cost proportional to the run); the full table is `knowledge_audit`'s.",
)
def knowledge_run_checks(
    context: dg.AssetCheckExecutionContext, database: DatabaseResource, embedder: EmbeddingResource
) -> Iterator[dg.AssetCheckResult]:
    yield from evaluate_rules(database, embedder, run_pages(context))


def run_pages(context: dg.AssetCheckExecutionContext) -> list[str]:
    """The page keys the run targets (its partition or key range; none for an unpartitioned run).
    Resolved from the run's range itself, so the checks also run alone over a range (from the UI)."""
    if context.has_partition_key:
        return [context.partition_key]
    if context.has_partition_key_range:
        with dg.partition_loading_context(dynamic_partitions_store=context.instance):
            return list(pages_partitions.get_partition_keys_in_range(context.partition_key_range))
    return []


knowledge_base = dg.AssetSpec(
    "knowledge_base",
    deps=[chunk_embeddings],
    group_name="maintenance",
    kinds={"pgvector"},
    description="tenant_knowledge as a whole (website pages, manual texts, FAQs of every tenant), as audited.",
)


@dg.multi_asset_check(
    specs=[dg.AssetCheckSpec(rule.name, asset=knowledge_base.key, description=rule.description) for rule in RULES],
    description="The run checks' rules over the whole table, by tenant.",
)
def knowledge_audit(database: DatabaseResource, embedder: EmbeddingResource) -> Iterator[dg.AssetCheckResult]:
    yield from evaluate_rules(database, embedder, None)


knowledge_audit_job = dg.define_asset_job(
    "knowledge_audit_job",
    selection=dg.AssetSelection.checks(knowledge_audit),
    tags=maintenance_run_tags("audit"),
    description="Full-table audit of the knowledge base (every tenant); page runs check only their pages.",
)

knowledge_audit_schedule = dg.ScheduleDefinition(
    job=knowledge_audit_job,
    cron_schedule="30 3 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Nightly full-table audit of the knowledge base.",
)
