"""The plain pieces of recovery: telling a dead run worker from a live one (pids are reused), and
renewing a crawl request that a dead run consumed (its run key was used, so the sensor would
never launch it again)."""

from __future__ import annotations

import os
import subprocess
import time

from pilito_pipeline.processes import process_alive
from pilito_pipeline.store.db import connect
from pilito_pipeline.store.websites import (
    get_website,
    mark_crawl_started,
    register_website,
    request_crawl_again,
    websites_awaiting_crawl,
)


def test_a_running_process_is_alive_and_a_dead_or_zombie_one_is_not() -> None:
    assert process_alive(os.getpid(), time.time())
    child = subprocess.Popen(["sleep", "60"])
    seen_at = time.time()
    assert process_alive(child.pid, seen_at)
    child.kill()
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # dead, not yet collected: a zombie
    assert not process_alive(child.pid, seen_at)
    child.wait()
    assert not process_alive(child.pid, seen_at)


def test_a_pid_reused_by_a_later_process_is_not_the_worker() -> None:
    """The pid recorded an hour ago now belongs to a process started since: the worker is gone."""
    assert not process_alive(os.getpid(), time.time() - 3600)


def test_a_crawl_killed_mid_way_keeps_its_run_key_until_renewed(database_url: str) -> None:
    with connect(database_url) as conn:
        website = register_website(conn, "acme", "https://acme.example/")
        conn.commit()
        mark_crawl_started(conn, website.id)  # the run dies here: nothing closes the crawl
        conn.commit()
        stuck = get_website(conn, website.id)
        assert stuck.status == "crawling"
        # The sensor sees the same request (the same run key, already used): never launched again.
        assert [w.crawl_requested_at for w in websites_awaiting_crawl(conn)] == [website.crawl_requested_at]

        run_created_at = conn.execute("SELECT clock_timestamp() AS t").fetchone()["t"]
        conn.commit()
        assert request_crawl_again(conn, website.id, run_created_at, "crawl run r1 ended (FAILURE)")
        conn.commit()
        renewed = get_website(conn, website.id)
        assert renewed.status == "failed" and renewed.last_error == "crawl run r1 ended (FAILURE)"
        assert renewed.crawl_requested_at > website.crawl_requested_at
        assert [w.crawl_requested_at for w in websites_awaiting_crawl(conn)] == [renewed.crawl_requested_at]

        # The same dead run seen again renews nothing: the request is newer than the run.
        assert not request_crawl_again(conn, website.id, run_created_at, "again")
        assert get_website(conn, website.id).crawl_requested_at == renewed.crawl_requested_at


def test_a_request_consumed_by_a_run_that_failed_before_the_crawl_began_is_renewed(database_url: str) -> None:
    """The run failed before `mark_crawl_started` (the database was down): status unchanged."""
    with connect(database_url) as conn:
        website = register_website(conn, "acme", "https://acme.example/")
        conn.commit()
        run_created_at = conn.execute("SELECT clock_timestamp() AS t").fetchone()["t"]
        conn.commit()
        assert request_crawl_again(conn, website.id, run_created_at, "unused")
        renewed = get_website(conn, website.id)
        assert renewed.status == "pending" and renewed.last_error is None
        assert renewed.crawl_requested_at > website.crawl_requested_at


def test_a_disabled_website_is_not_requested_again(database_url: str) -> None:
    with connect(database_url) as conn:
        website = register_website(conn, "acme", "https://acme.example/")
        conn.execute("UPDATE websites SET status = 'disabled' WHERE id = %s", (website.id,))
        conn.commit()
        later = conn.execute("SELECT clock_timestamp() AS t").fetchone()["t"]
        assert not request_crawl_again(conn, website.id, later, "dead run")
