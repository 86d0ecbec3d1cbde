"""The operator's `register_website_job` (launchpad run config), executed through Dagster's API on
a real instance: refused URLs and tenant ids fail the run with the reason; a good one is stored and
requested for crawling, as the CLI does."""

from __future__ import annotations

from typing import Any

import dagster as dg
import pytest

from pilito_pipeline.defs.operator_jobs import register_website_job
from pilito_pipeline.defs.resources import CrawlerResource, DatabaseResource
from pilito_pipeline.store.db import connect
from pilito_pipeline.store.websites import list_websites, websites_awaiting_crawl

pytestmark = pytest.mark.slow


@pytest.fixture
def job_resources(database_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("CRAWL_ALLOWED_HOSTS", "127.0.0.1")
    return {"database": DatabaseResource(database_url=database_url)}


def run_job(resources: dict[str, Any], **config: Any) -> dg.ExecuteInProcessResult:
    with dg.instance_for_test() as instance:
        return register_website_job.execute_in_process(
            run_config={"ops": {"register_website_op": {"config": config}}},
            resources=resources, instance=instance, raise_on_error=False,
        )


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    [event] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    return event.step_failure_data.user_failure_data.description


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://10.0.0.5/", "private"),
        ("http://[::1]:8080/", "loopback"),
        ("http://2130706433/", "loopback"),  # 127.0.0.1 spelled as one number, not on the allow-list
        ("file:///etc/passwd", "scheme"),
        ("http://admin:secret@example.com/", "credentials"),
    ],
)
def test_refused_url_fails_the_run_with_the_reason(
    job_resources: dict[str, Any], database_url: str, url: str, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CRAWL_ALLOWED_HOSTS")
    result = run_job(job_resources, tenant_id="acme", url=url)
    assert not result.success
    message = failure_message(result)
    assert message.startswith("website not registered: refused") and reason in message
    with connect(database_url) as conn:
        assert list_websites(conn) == []


def test_invalid_tenant_id_fails_the_run(job_resources: dict[str, Any], database_url: str) -> None:
    result = run_job(job_resources, tenant_id="acme,other", url="http://127.0.0.1:9/")
    assert not result.success
    assert "invalid tenant id" in failure_message(result)
    with connect(database_url) as conn:
        assert list_websites(conn) == []


def test_good_url_is_registered_and_requested_for_crawl(job_resources: dict[str, Any], database_url: str) -> None:
    result = run_job(
        job_resources, tenant_id="acme", url="http://127.0.0.1:8765/index.html?utm_source=x#top",
        max_pages=25, recrawl_interval_hours=12, exclude_patterns=["/admin/"],
    )
    assert result.success
    with connect(database_url) as conn:
        [website] = list_websites(conn, "acme")
        awaiting = websites_awaiting_crawl(conn)
    assert website.url == "http://127.0.0.1:8765/index.html"  # normalised as the CLI does
    assert website.max_pages == 25 and website.recrawl_interval.total_seconds() == 12 * 3600
    assert website.exclude_patterns == ("/admin/",)
    assert [w.id for w in awaiting] == [website.id]
    [materialization] = [
        e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_OUTPUT
    ]
    metadata = materialization.step_output_data.metadata
    assert metadata["website_partition"].value == website.partition_key


def test_run_config_is_typed_for_the_launchpad(job_resources: dict[str, Any]) -> None:
    """The launchpad shows the fields with their types; a wrong type is refused before any run."""
    with pytest.raises(dg.DagsterInvalidConfigError):
        run_job(job_resources, tenant_id="acme", url="http://127.0.0.1/", max_pages="many")


def test_the_allow_list_comes_from_the_environment_not_resource_config(
    job_resources: dict[str, Any], database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The launchpad can edit the crawler resource's config; the op's SSRF allow-list is the environment's."""
    monkeypatch.delenv("CRAWL_ALLOWED_HOSTS")
    job_resources["crawler"] = CrawlerResource(allowed_hosts=["10.0.0.0/8"])
    result = run_job(job_resources, tenant_id="acme", url="http://10.0.0.5/")
    assert not result.success and "private" in failure_message(result)


def test_job_is_not_retried_by_run_retries() -> None:
    assert register_website_job.tags["dagster/max_retries"] == "0"
