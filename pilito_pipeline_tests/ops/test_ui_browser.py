"""The Dagster UI in a real browser (headless Chromium from Debian, driven by Selenium).

Against a stack started as the demo starts it (embedded PostgreSQL, `dagster dev` with the project's
dagster.yaml, the sample site on 127.0.0.1), an operator's day, every action through the UI:
the sensors are running; a site is registered from the launchpad (a refused URL first, then a good
one); the crawl run and the page runs succeed; the `pages` group's `chunk_embeddings` partitions
show their materialisation metadata; the website partition is re-crawled from the asset's
Materialize dialog and that run finishes; an asset check's result is read.

Each step leaves a screenshot under `.artifacts/ui/` (the path is printed). The UI's own GraphQL
endpoint is used only to find run ids; every state asserted is read from the rendered page.
Waits poll the page (minutes-long deadlines), never fixed sleeps.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pilito_pipeline.settings import PROJECT_ROOT
from pilito_pipeline_tests.dagster_stack import graphql
from pilito_pipeline_tests.waiting import wait_for

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL_HINT = "sudo apt-get update && sudo apt-get install -y --no-install-recommends chromium chromium-driver"
ARTIFACTS = PROJECT_ROOT / ".artifacts" / "ui"
LOCATION = "__repository__@pilito_pipeline.definitions"
TENANT = "uitest"


def page_run_checks() -> dict[str, str]:
    """The asset checks on `chunk_embeddings` (name → description), as the definitions declare them."""
    import dagster as dg

    from pilito_pipeline.defs import checks

    return {
        spec.name: spec.description or ""
        for definition in dg.load_asset_checks_from_modules([checks])
        for spec in definition.check_specs
        if spec.asset_key == dg.AssetKey("chunk_embeddings")
    }
STEP_TIMEOUT = 600.0
"""Seconds any one UI state may take to appear: generous, for a loaded machine."""



@dataclass
class Stack:
    ui: str
    site: str
    database_url: str

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        return graphql(self.ui, query, variables)

    def runs(self, tags: dict[str, str]) -> list[dict[str, Any]]:
        """Runs carrying all `tags`, newest first: {runId, status, jobName, tags}."""
        data = self.graphql(
            "query Runs($filter: RunsFilter) { runsOrError(filter: $filter) {"
            " ... on Runs { results { runId status jobName tags { key value } } } } }",
            {"filter": {"tags": [{"key": k, "value": v} for k, v in tags.items()]}},
        )
        return data["runsOrError"]["results"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from pilito_pipeline.app.demo import serve_demo_site
    from pilito_pipeline.app.dagster_process import start_dagster
    from pilito_pipeline.settings import settings_from_env
    from pilito_pipeline.store.db import resolve_database_url
    from pilito_pipeline.store.migrate import migrate
    from pilito_pipeline.store.server import stop_embedded_server
    from pilito_pipeline_tests.services import free_port

    with pytest.MonkeyPatch.context() as env:
        env.setenv("PILITO_DATA_DIR", str(tmp_path_factory.mktemp("ui-stack")))
        env.setenv("CRAWL_ALLOWED_HOSTS", "127.0.0.1")
        env.setenv("CRAWL_RATE_LIMIT_SECONDS", "0.05")
        env.delenv("DATABASE_URL", raising=False)
        settings = settings_from_env()
        database_url = resolve_database_url(settings)
        migrate(database_url, embedding_dimension=settings.embedding_dimension)
        site, site_url = serve_demo_site("127.0.0.1", 0)
        dagster = start_dagster(settings, database_url, port=free_port())
        try:
            dagster.wait_until_ready(timeout=STEP_TIMEOUT)
            stack = Stack(dagster.url, site_url, database_url)
            stack.graphql("mutation { setNuxSeen }")  # no "join the community" modal over the pages
            yield stack
        finally:
            dagster.stop()
            site.shutdown()
            stop_embedded_server(settings.data_dir)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        message = f"the browser test needs Debian's Chromium: {', '.join(missing)} not found; run: {INSTALL_HINT}"
        if os.environ.get("PILITO_REQUIRE_BROWSER"):  # CI installs it (make browser): missing there is a failure
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager never downloads: browser and driver are given
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1600,1000", "--lang=en-US"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(STEP_TIMEOUT)
    try:
        yield driver
    finally:
        driver.quit()


class UI:
    """The pages an operator uses, and what the test reads from them."""

    def __init__(self, driver: Any, stack: Stack) -> None:
        self.driver, self.stack = driver, stack
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.screenshots: list[Path] = []

    def open(self, path: str) -> None:
        self.driver.get(self.stack.ui + path)

    def text(self) -> str:
        from selenium.common.exceptions import WebDriverException

        try:
            return self.driver.find_element("tag name", "body").text
        except WebDriverException:  # the page is re-rendering; read again on the next poll
            return ""

    def wait_text(self, *needles: str, refuse: tuple[str, ...] = (), timeout: float = STEP_TIMEOUT) -> str:
        """Wait until the page shows every needle; fail at once if it shows a `refuse` text."""

        def probe() -> str | None:
            text = self.text()
            for bad in refuse:
                if bad in text:
                    self.screenshot(f"failed-{len(self.screenshots) + 1:02d}")
                    raise AssertionError(f"the page shows {bad!r}:\n{text[:3000]}")
            return text if all(needle in text for needle in needles) else None

        return wait_for(f"{needles} on {self.driver.current_url}", probe, timeout, interval=1)

    def click_button(self, label: str) -> None:
        from selenium.webdriver.common.by import By

        def clickable() -> Any:
            for button in self.driver.find_elements(By.XPATH, f"//button[contains(normalize-space(), '{label}')]"):
                if button.is_displayed() and button.is_enabled():
                    return button
            return None

        wait_for(f"button {label!r} on {self.driver.current_url}", clickable, STEP_TIMEOUT, interval=1).click()

    def screenshot(self, name: str) -> Path:
        path = ARTIFACTS / f"{name}.png"
        self.driver.save_screenshot(str(path))
        self.screenshots.append(path)
        return path

    def wait_run(self, run_id: str, expected: str = "Success") -> str:
        """Open the run's page and wait for its status; a run ending otherwise fails at once."""
        self.open(f"/runs/{run_id}")
        other = tuple(s for s in ("Success", "Failure", "Canceled") if s != expected)
        return self.wait_text(run_id[:8], expected, refuse=other)

    def launch_register_website(self, url: str) -> str:
        """Fill the launchpad of `register_website_job` and launch; returns the new run's id."""
        self.open(f"/locations/{LOCATION}/jobs/register_website_job/playground")
        self.wait_text("Launchpad", "register_website_op", "Scaffold missing config")
        config = (
            "ops:\n  register_website_op:\n    config:\n"
            f"      tenant_id: {TENANT}\n      url: {url}\n      max_pages: 40\n      recrawl_interval_hours: 24\n"
        )
        # The launchpad's editor is CodeMirror; its API is how text gets into it (typing would
        # fight its auto-indent and completions).
        wait_for("the config editor", lambda: self.driver.execute_script(
            "const e = document.querySelector('.CodeMirror'); if (!e) return false;"
            " e.CodeMirror.setValue(arguments[0]); return true;", config), STEP_TIMEOUT, interval=1)
        self.click_button("Launch Run")
        return wait_for("the run page", self._run_id_in_url, STEP_TIMEOUT, interval=1)

    def _run_id_in_url(self) -> str | None:
        url = self.driver.current_url
        return url.rsplit("/runs/", 1)[1].split("?")[0] if "/runs/" in url else None


@pytest.mark.timeout(1800)  # a whole stack, a crawl and model-loading page runs, on a loaded machine
def test_operator_day_in_the_dagster_ui(stack: Stack, browser: Any) -> None:
    from pilito_pipeline.store.db import connect

    ui = UI(browser, stack)
    print(f"\nUI screenshots: {ARTIFACTS}")

    # 1. The UI opens; both pipeline sensors are running.
    ui.open("/automation")
    ui.wait_text("website_crawl_sensor", "pending_pages_sensor")
    ui.screenshot("01-automation")
    for sensor in ("website_crawl_sensor", "pending_pages_sensor"):
        ui.open(f"/locations/{LOCATION}/sensors/{sensor}")
        ui.wait_text(sensor, "Running", "Latest tick")
    ui.screenshot("02-sensor-running")

    # 2. A refused URL: the run fails and says why.
    refused = ui.launch_register_website("http://169.254.169.254/latest/meta-data/")
    ui.wait_run(refused, expected="Failure")
    ui.wait_text("website not registered: refused")
    ui.screenshot("03-register-refused")

    # 3. The sample site, registered from the launchpad.
    registered = ui.launch_register_website(stack.site)
    ui.wait_run(registered)
    ui.screenshot("04-register-succeeded")
    with connect(stack.database_url) as conn:
        website = conn.execute("SELECT id FROM websites WHERE tenant_id = %s", (TENANT,)).fetchone()
    partition = f"w{website['id']}"

    # 4. The sensor's crawl run, then the page runs, succeed.
    crawl = wait_for("the crawl run", lambda: stack.runs({"dagster/partition": partition}), STEP_TIMEOUT, interval=1)[-1]
    ui.wait_run(crawl["runId"])
    ui.screenshot("05-crawl-run-succeeded")

    def pages_done() -> bool:
        with connect(stack.database_url) as conn:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE content_hash IS NOT NULL AND content_hash IS DISTINCT FROM processed_hash) AS pending,"
                " count(*) FILTER (WHERE processed_hash IS NOT NULL) AS done FROM pages WHERE website_id = %s",
                (website["id"],),
            ).fetchone()
        return row["pending"] == 0 and row["done"] > 0

    wait_for("every page processed", pages_done, STEP_TIMEOUT, interval=1)
    page_runs = [r for r in stack.runs({"pilito/tenant": TENANT}) if r["runId"] != crawl["runId"]
                 and not any(t["key"] == "dagster/partition" for t in r["tags"])]
    assert page_runs, "no page runs were launched"
    for run in page_runs:
        ui.wait_run(run["runId"])
    ui.screenshot("06-page-run-succeeded")

    # 5. The pages' embeddings asset: partitions, and one partition's materialisation metadata.
    with connect(stack.database_url) as conn:
        page = conn.execute(
            "SELECT p.partition_key, max(k.embedding_model) AS model FROM pages p"
            " JOIN tenant_knowledge k ON k.tenant_id = p.tenant_id AND k.source_id = p.partition_key"
            " WHERE p.website_id = %s GROUP BY p.id ORDER BY p.id LIMIT 1",
            (website["id"],),
        ).fetchone()
    ui.open(f"/assets/chunk_embeddings?view=partitions&partition={page['partition_key']}")
    text = ui.wait_text("Materialized", "Metadata", "chunks", "embeddings_computed", "model", page["model"])
    assert "Missing (0)" in text and "Failed (0)" in text
    ui.screenshot("07-pages-partition-metadata")

    # 6. Re-crawl the website partition from the asset's Materialize dialog; the run finishes.
    before = {r["runId"] for r in stack.runs({"dagster/partition": partition})}
    ui.open(f"/assets/website_crawl?view=partitions&partition={partition}")
    ui.wait_text(partition, "Materialized", "pages_fetched")
    ui.click_button("Materialize")
    ui.wait_text("Launch runs to materialize website_crawl", "Launch 1 run")
    ui.screenshot("08-recrawl-dialog")
    ui.click_button("Launch 1 run")
    recrawl = wait_for("the re-crawl run", lambda: [
        r for r in stack.runs({"dagster/partition": partition}) if r["runId"] not in before], STEP_TIMEOUT, interval=1)[0]
    ui.wait_run(recrawl["runId"])
    ui.screenshot("09-recrawl-succeeded")
    ui.open(f"/assets/website_crawl?view=partitions&partition={partition}")
    ui.wait_text(recrawl["runId"][:8], "pages_not_modified")
    ui.screenshot("10-recrawl-metadata")

    # 7. The asset checks: every one evaluated and succeeded; one check's result read in detail.
    checks = page_run_checks()
    ui.open("/assets/chunk_embeddings?view=checks")
    text = wait_for("every asset check evaluated", lambda: (
        t if (t := ui.text()).count("Succeeded") + t.count("Failed") >= len(checks) else None), STEP_TIMEOUT, interval=1)
    listed = text.split("Execute all", 1)[1].split("\n")
    results = {name: listed[listed.index(name) + 1] for name in checks}
    ui.screenshot("11-asset-checks")
    assert all(result == "Succeeded" for result in results.values()), results
    name, description = sorted(checks.items())[0]
    ui.open(f"/assets/chunk_embeddings?view=checks&checkDetail={name}")
    ui.wait_text(description, "Evaluation result", "Passed")
    ui.screenshot("12-asset-check-detail")
    print("\n".join(str(path) for path in ui.screenshots))
