"""Is a process still the one we knew? A pid alone says little: pids are reused once a process dies."""

from __future__ import annotations

import os
from pathlib import Path

START_TIME_SLACK_SECONDS = 2.0
"""Boot time is known to the second: a process may appear to start this much later than it did."""


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise RuntimeError("/proc/stat has no btime")


def process_start_time(pid: int) -> float | None:
    """Unix time process `pid` started; None when there is no such running process (a zombie is
    dead: it only waits for its parent to collect its exit status)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name in parentheses may hold spaces
    state, start_ticks = fields[0], int(fields[19])  # stat fields 3 and 22
    if state in ("Z", "X"):
        return None
    return _boot_time() + start_ticks / os.sysconf("SC_CLK_TCK")


def process_alive(pid: int, seen_at: float) -> bool:
    """Whether the process that had `pid` at unix time `seen_at` is still running.

    A process with that pid started after `seen_at` is another one that reused the number.
    Without /proc (not Linux) only existence can be checked.
    """
    if not Path("/proc/self/stat").exists():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    started = process_start_time(pid)
    return started is not None and started <= seen_at + START_TIME_SLACK_SECONDS
