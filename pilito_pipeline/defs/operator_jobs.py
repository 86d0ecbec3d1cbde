"""Jobs an operator launches from the Dagster UI's launchpad, with typed run config.

`register_website_job` does what `pilito-pipeline register-website` does, through the same
functions (URL normalisation, the SSRF guard, the tenant-id rule, `register_website`); the
`website_crawl_sensor` then crawls the site. A refused URL or tenant id fails the run with the
reason as its message, and the run is not retried.
"""

from datetime import timedelta

import dagster as dg
from pydantic import Field

from pilito_pipeline.crawl import check_url_safe, normalize_url
from pilito_pipeline.defs.resources import DatabaseResource
from pilito_pipeline.settings import settings_from_env
from pilito_pipeline.store.websites import check_tenant_id, register_website

NO_RUN_RETRIES = {"dagster/max_retries": "0"}
"""An operator's request refused once is refused again: dagster.yaml's run retries do not apply."""


class RegisterWebsiteConfig(dg.Config):
    """A tenant's website and its crawl limits."""

    tenant_id: str = Field(description="Tenant id: 1-64 of A-Z a-z 0-9 _ . -")
    url: str = Field(description="The site's start URL (public http/https only)")
    max_pages: int = Field(default=200, ge=1, le=100_000, description="Pages fetched per crawl at most")
    max_depth: int = Field(default=5, ge=0, le=50, description="Link depth from the start URL")
    recrawl_interval_hours: float = Field(default=24 * 7, gt=0, description="Re-crawl after this many hours")
    include_patterns: list[str] = Field(default=[], description="Regexes a URL must match")
    exclude_patterns: list[str] = Field(default=[], description="Regexes a URL must not match")
    include_subdomains: bool = False


@dg.op(
    out=dg.Out(dg.Nothing),
    description="Check the URL (SSRF guard) and tenant id, register the website and request its crawl.")
def register_website_op(
    context: dg.OpExecutionContext,
    config: RegisterWebsiteConfig,
    database: DatabaseResource,
) -> dg.Output:
    try:
        tenant_id = check_tenant_id(config.tenant_id)
        # The allow-list comes from the environment, as for the CLI: not from run config, which
        # the launchpad could edit. Checked before normalising drops user:pass@.
        check_url_safe(config.url, settings_from_env().crawl_allowed_hosts)
        url = normalize_url(config.url)
    except ValueError as exc:  # UnsafeURLError, InvalidTenantId, a malformed URL
        raise dg.Failure(description=f"website not registered: {exc}", allow_retries=False) from exc
    with database.connect() as conn:
        website = register_website(
            conn, tenant_id, url,
            max_pages=config.max_pages, max_depth=config.max_depth,
            include_patterns=tuple(config.include_patterns), exclude_patterns=tuple(config.exclude_patterns),
            include_subdomains=config.include_subdomains,
            recrawl_interval=timedelta(hours=config.recrawl_interval_hours),
        )
        conn.commit()
    context.log.info(
        f"website {website.partition_key} registered for tenant {tenant_id}: {url};"
        " website_crawl_sensor launches its crawl"
    )
    return dg.Output(
        None,
        metadata={
            "tenant": tenant_id,
            "url": dg.MetadataValue.url(url),
            "website_partition": website.partition_key,
            "max_pages": website.max_pages,
            "recrawl_interval_hours": config.recrawl_interval_hours,
        },
    )


@dg.job(
    tags=NO_RUN_RETRIES,
    description="Register a tenant's website (tenant, URL, limits, re-crawl interval); the crawl sensor takes it from there.",
)
def register_website_job() -> None:
    register_website_op()
