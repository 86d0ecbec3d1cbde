"""The one way tests wait for a state: poll until it holds, fail with what was awaited.

The deadline only bounds a failing test; a passing one returns the moment the state holds, so it is
generous (a loaded 2-core machine is slow, not failing) and still under pytest's 600 s per-test
timeout, so the failure says what was missing instead of showing a timeout's stack dump.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
DEADLINE = 540.0
"""Seconds any one wait may take by default."""


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    timeout: float = DEADLINE,
    interval: float = 0.25,
    on_error: type[BaseException] | tuple[type[BaseException], ...] = (),
    diagnostics: Callable[[], str] | None = None,
) -> T:
    """Poll `probe` every `interval` seconds until it returns something truthy, and return that.
    Errors of a type in `on_error` count as "not yet". After `timeout` seconds fail with an
    AssertionError naming `what`, followed by `diagnostics()` where given (a log tail, say)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = probe()
        except on_error:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            details = f"\n{diagnostics()}" if diagnostics is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{details}")
        time.sleep(interval)
