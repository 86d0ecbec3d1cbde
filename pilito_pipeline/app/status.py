"""`pilito-pipeline status`: every website on one screen, one line each, its URL, last error, its
quarantined pages and any retirement hold under it."""

from __future__ import annotations

from datetime import datetime, timezone

from pilito_pipeline.store.site_status import SiteStatus

HEADER = ("site", "tenant", "state", "crawl", "pages", "indexed", "pending", "failed", "quarantined", "chunks",
          "last crawl")


def crawl_column(site: SiteStatus) -> str:
    """`done/known (rate)` while crawling, else the last crawl's page count and rate."""
    progress = site.progress
    done = progress.get("done", sum(v for k, v in progress.items()
                                   if k in ("fetched", "not_modified", "skipped", "failed", "gone")))
    if site.status == "crawling":
        known = progress.get("known", done)
        share = f" {100 * done // known}%" if known else ""
        return f"{done}/{known}{share} {progress.get('pages_per_second', 0)}/s"
    if not progress:
        return "queued" if site.status == "pending" else "-"
    seconds = progress.get("seconds")
    return f"{done} in {seconds}s" if seconds is not None else str(done)


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    if moment is None:
        return "never"
    seconds = int(((now or datetime.now(timezone.utc)) - moment).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{max(seconds, 0)}s ago"


def render_status(sites: list[SiteStatus], now: datetime | None = None, width: int = 160) -> str:
    if not sites:
        return "no websites registered"
    rows = [HEADER] + [
        (s.partition_key, s.tenant_id, s.status, crawl_column(s), str(s.pages), str(s.indexed),
         str(s.pending), str(s.failed), str(s.quarantined), str(s.chunks), ago(s.last_crawled_at, now))
        for s in sites
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = []
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        site = sites[index - 1] if index else None
        if site is not None:
            lines.append(f"    {site.url}")
            if site.last_error:
                lines.append(f"    last error: {' '.join(site.last_error.split())[: width - 16]}")
            if site.quarantined:
                lines.append(
                    f"    quarantined: {site.quarantined} pages, latest {' '.join(site.quarantine_reason.split())}"[: width - 4]
                )
                lines.append(f"    (after fixing the cause: pilito-pipeline retry-pages --tenant {site.tenant_id})")
            if site.retirement_hold:
                lines.append(f"    {site.retirement_hold[: width - 4]}")
    return "\n".join(lines)
