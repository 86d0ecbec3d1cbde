"""Benchmark: extract + chunk 1,000 pages, against trafilatura + a naive fixed-size splitter.

    python -m pilito_pipeline_tests.bench.bench_text [--pages 1000]

The pages are the bundled demo pages with variations (brand renamed, main text repeated one to
three times, page number in the title), so sizes vary as on a real site. The baseline, measured in
the same run on the same pages, is what the seeds did: plain text from trafilatura (default
settings, and again in fast mode) cut into fixed windows of 100 words with 20 words of overlap
(about our child size), no structure, no parents, no TL;DR. Printed: time and pages/s of both, and for the demo site chunks per page, mean chunk
size and how many chunks hold whole sentences of two or more h2 sections (structure-aware chunks
only do so where tiny sections were merged on purpose).
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from collections.abc import Callable

import trafilatura

from pilito_pipeline.app.demo import SITE_DIR
from pilito_pipeline.text import ExtractionError, chunk_document, estimate_tokens, extract_document, split_sentences

BASELINE_WINDOW_WORDS = 100
BASELINE_OVERLAP_WORDS = 20
_ARTICLE = re.compile(r"(<article class=\"content\">)(.*?)(</article>)", re.DOTALL)


def demo_pages() -> dict[str, str]:
    return {
        str(path.relative_to(SITE_DIR)): path.read_text(encoding="utf-8")
        for path in sorted(SITE_DIR.rglob("*.html"))
        if "admin" not in path.parts
    }


def varied_pages(pages: dict[str, str], count: int) -> list[tuple[str, str]]:
    """`count` pages derived from the demo pages: renamed, main text repeated 1-3 times."""
    sources = list(pages.items())
    varied = []
    for number in range(count):
        path, html = sources[number % len(sources)]
        repeat = 1 + number % 3
        html = _ARTICLE.sub(lambda m: m.group(1) + m.group(2) * repeat + m.group(3), html, count=1)
        html = html.replace("آوای نو", f"آوای نو {number}").replace("<title>", f"<title>{number} ", 1)
        varied.append((f"http://bench.test/{number}/{path}", html))
    return varied


def ours(html: str, url: str) -> list[tuple[str, str]]:
    """(section title, text) of the child chunks: what gets matched."""
    chunks = chunk_document(extract_document(html, url))
    return [(chunk.section_title, chunk.text) for chunk in chunks if not chunk.is_parent]


def baseline(html: str, url: str, fast: bool = False) -> list[tuple[str, str]]:
    text = trafilatura.extract(html, url=url, include_tables=True, fast=fast) or ""
    words = text.split()
    step = BASELINE_WINDOW_WORDS - BASELINE_OVERLAP_WORDS
    return [("", " ".join(words[start : start + BASELINE_WINDOW_WORDS])) for start in range(0, max(len(words), 1), step) if words[start:]]


def baseline_fast(html: str, url: str) -> list[tuple[str, str]]:
    return baseline(html, url, fast=True)


def timed(pipeline: Callable[[str, str], list[tuple[str, str]]], pages: list[tuple[str, str]]) -> tuple[float, int, int]:
    started = time.perf_counter()
    chunks = dropped = 0
    for url, html in pages:
        try:
            chunks += len(pipeline(html, url))
        except ExtractionError:
            dropped += 1
    return time.perf_counter() - started, chunks, dropped


def section_sentences(html: str, path: str) -> list[set[str]]:
    """For each h2 section of the page (and the opening text), its sentences of 4+ words."""
    doc = extract_document(html, f"http://127.0.0.1/{path}")
    sections: list[set[str]] = [set()]
    for block in doc.blocks:
        if block.kind == "heading" and block.level <= 2:
            sections.append(set())
            continue
        sections[-1].update(" ".join(s.split()) for s in split_sentences(block.text) if len(s.split()) >= 4)
    return [section for section in sections if section]


def site_statistics(pipeline: Callable[[str, str], list[tuple[str, str]]], pages: dict[str, str]) -> dict[str, float]:
    per_page, sizes, mixing = [], [], 0
    for path, html in pages.items():
        try:
            sections = section_sentences(html, path)
        except ExtractionError:
            continue
        chunks = pipeline(html, f"http://127.0.0.1/{path}")
        per_page.append(len(chunks))
        for _, text in chunks:
            sizes.append(estimate_tokens(text))
            flat = " ".join(text.split())
            mixing += sum(1 for section in sections if any(sentence in flat for sentence in section)) > 1
    return {
        "pages": len(per_page),
        "chunks": sum(per_page),
        "chunks_per_page": statistics.mean(per_page),
        "mean_tokens": statistics.mean(sizes),
        "max_tokens": max(sizes),
        "chunks_mixing_sections": mixing,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=1000)
    args = parser.parse_args()

    pages = demo_pages()
    generated = varied_pages(pages, args.pages)
    for pipeline in (ours, baseline, baseline_fast):  # warm up: imports, jusText stop lists, regex caches
        timed(pipeline, generated[:20])

    ours_seconds, ours_chunks, ours_dropped = timed(ours, generated)
    base_seconds, base_chunks, base_dropped = timed(baseline, generated)
    fast_seconds, fast_chunks, _ = timed(baseline_fast, generated)
    print(f"extract + chunk {len(generated)} pages ({sum(len(h) for _, h in generated) / 1e6:.1f} MB of HTML)")
    print(f"  ours      {ours_seconds:6.2f} s  {len(generated) / ours_seconds:7.1f} pages/s  {ours_chunks} child chunks (+ parents, TL;DRs)  {ours_dropped} pages dropped with a reason")
    print(f"  baseline  {base_seconds:6.2f} s  {len(generated) / base_seconds:7.1f} pages/s  {base_chunks} fixed windows  {base_dropped} dropped")
    print(f"  baseline, trafilatura fast mode  {fast_seconds:6.2f} s  {len(generated) / fast_seconds:7.1f} pages/s  {fast_chunks} fixed windows")
    print(f"  time ratio ours/baseline: {ours_seconds / base_seconds:.2f}x   ours/baseline-fast: {ours_seconds / fast_seconds:.2f}x")

    print(f"\nbundled demo site ({len(pages)} pages)")
    ours_site, base_site = site_statistics(ours, pages), site_statistics(baseline, pages)
    for key in ours_site:
        ratio = ours_site[key] / base_site[key] if base_site[key] else float("nan")
        print(f"  {key:24} ours {ours_site[key]:8.1f}   baseline {base_site[key]:8.1f}   ratio {ratio:5.2f}")


if __name__ == "__main__":
    main()
