"""`pilito-pipeline`: start the stack (or the embedding service alone), register websites, add manual/FAQ text, ask, evaluate, run the demo."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import timedelta
from pathlib import Path

from pilito_pipeline.settings import get_settings


def _database_url() -> str:
    from pilito_pipeline.store.db import resolve_database_url
    from pilito_pipeline.store.migrate import migrate

    settings = get_settings()
    url = resolve_database_url(settings)
    migrate(url, embedding_dimension=settings.embedding_dimension)
    return url


def cmd_register_website(args: argparse.Namespace) -> int:
    from pilito_pipeline.crawl import check_url_safe, normalize_url
    from pilito_pipeline.store.db import transaction
    from pilito_pipeline.store.websites import register_website

    url = normalize_url(args.url)
    check_url_safe(url, get_settings().crawl_allowed_hosts)
    with transaction(_database_url()) as conn:
        website = register_website(
            conn, args.tenant, url, max_pages=args.max_pages, max_depth=args.max_depth,
            include_patterns=tuple(args.include), exclude_patterns=tuple(args.exclude),
            include_subdomains=args.include_subdomains,
            recrawl_interval=timedelta(hours=args.recrawl_hours),
        )
    print(f"website {website.id} ({website.partition_key}) registered for tenant {website.tenant_id}: {website.url}")
    print("the Dagster sensor `website_crawl_sensor` will crawl it within seconds")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from pilito_pipeline.embed import configured_model_name
    from pilito_pipeline.app.status import render_status
    from pilito_pipeline.store.db import connect
    from pilito_pipeline.store.site_status import site_statuses

    with connect(_database_url()) as conn:
        print(render_status(site_statuses(conn, args.tenant, embedding_model=configured_model_name(get_settings()))))
    return 0


def cmd_retry_pages(args: argparse.Namespace) -> int:
    from pilito_pipeline.store.db import transaction
    from pilito_pipeline.store.page_failures import release_pages
    from pilito_pipeline.store.tenants import check_tenant_id

    check_tenant_id(args.tenant)
    with transaction(_database_url()) as conn:
        released = release_pages(conn, args.tenant)
    if not released:
        print(f"tenant {args.tenant} has no quarantined or failing pages")
        return 0
    print(f"{len(released)} pages of tenant {args.tenant} released: the pages sensor gives them a page run"
          f" within seconds ({', '.join(released[:10])}{', ...' if len(released) > 10 else ''})")
    return 0


def _provider():
    from pilito_pipeline.embed import build_provider

    return build_provider(get_settings())


def cmd_add_manual(args: argparse.Namespace) -> int:
    from pilito_pipeline.ingest.sources import ingest_manual
    from pilito_pipeline.store.db import connect

    text = Path(args.file).read_text(encoding="utf-8") if args.file != "-" else sys.stdin.read()
    with connect(_database_url(), autocommit=True) as conn:  # the write is one transaction; embedding holds none
        stats = ingest_manual(conn, _provider(), args.tenant, args.title, text)
    print(f"manual '{args.title}' stored for {args.tenant}: {stats}")
    return 0


def cmd_add_faq(args: argparse.Namespace) -> int:
    from pilito_pipeline.ingest.sources import ingest_faq
    from pilito_pipeline.store.db import connect

    with connect(_database_url(), autocommit=True) as conn:  # the write is one transaction; embedding holds none
        stats = ingest_faq(conn, _provider(), args.tenant, args.question, args.answer)
    print(f"FAQ entry stored for {args.tenant}: {stats}")
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    from pilito_pipeline.app.answers import print_answer
    from pilito_pipeline.retrieval import Retriever

    with Retriever.from_settings(get_settings()) as retriever:
        result = retriever.retrieve_context(
            args.question, args.tenant, primary_source=args.primary_source,
            secondary_sources=args.secondary, primary_budget=args.primary_budget,
            secondary_budget=args.secondary_budget,
        ).to_dict()
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2, default=str))
    else:
        print(f"Q: {args.question}")
        print_answer(result, args.top)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from pilito_pipeline.retrieval.evaluate import (
        METHODS, details, evaluate_queries, format_table, load_queries, score_rows,
    )

    queries = load_queries(Path(args.queries))
    outcomes = evaluate_queries(_database_url(), args.tenant, queries)
    groups = ["all", "tune", "test"] + (["class", "split/class"] if any(q.label for q in queries) else [])
    print(format_table(score_rows(outcomes, METHODS, k=args.k, groups=groups)))
    if args.details:
        with open(args.details, "w", encoding="utf-8") as out:
            for record in details(outcomes):
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
        print(f"per-query details: {args.details}")
    return 0


def _use_data_dir(args: argparse.Namespace) -> None:
    """`--data-dir` is PILITO_DATA_DIR for this process and every process it starts (absolute:
    Dagster runs from the project folder)."""
    if args.data_dir:
        os.environ["PILITO_DATA_DIR"] = str(Path(args.data_dir).resolve())
        get_settings.cache_clear()


def cmd_up(args: argparse.Namespace) -> int:
    from pilito_pipeline.app.up import StackAlreadyRunning, run_up

    _use_data_dir(args)
    try:
        return run_up(get_settings(), host=args.host, port=args.port, embedding_service=not args.in_process_embedding)
    except StackAlreadyRunning as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def cmd_metrics(args: argparse.Namespace) -> int:
    import signal

    import dagster as dg

    from pilito_pipeline.app.metrics_exporter import serve_ingestion_metrics

    with dg.DagsterInstance.get() as instance:  # DAGSTER_HOME's instance: where every run reports
        server, _ = serve_ingestion_metrics(instance, args.port, args.host)
        print(f"ingestion metrics at http://{args.host}:{args.port}/metrics", flush=True)
        stop = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop)
        try:
            signal.sigwait(stop)
        finally:
            server.shutdown()
    return 0


def cmd_embed_serve(args: argparse.Namespace) -> int:
    import signal

    from pilito_pipeline.embed.service import running_service, served_provider

    stop = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)  # from here on: a signal ends the wait below
    settings = get_settings()
    provider = served_provider(settings)
    with running_service(provider, args.host, args.port, max_batch_texts=args.max_batch_texts) as server:
        print(f"embedding service for {provider.model_name} ({provider.dimension} dimensions) at {server.url}"
              " (POST /v1/embeddings, GET /health)", flush=True)
        signal.sigwait(stop)
        print("stopping: finishing the batches in hand", flush=True)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pilito_pipeline.app.demo.run import run_demo
    from pilito_pipeline.app.up import StackAlreadyRunning

    _use_data_dir(args)
    try:
        return run_demo(port=args.port, site_port=args.site_port, keep_running=not args.exit_after_answers,
                        embedding_service=not args.in_process_embedding)
    except StackAlreadyRunning as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # interrupted before the UI was up; everything is already stopped
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pilito-pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_website_commands(sub)
    _add_knowledge_commands(sub)
    _add_retrieval_commands(sub)
    _add_stack_commands(sub)
    return parser


def _add_website_commands(sub: argparse._SubParsersAction) -> None:
    """The operator's website commands: register one, its crawl status, release its quarantined pages."""
    p = sub.add_parser("register-website", help="register a tenant's website and request a crawl")
    p.add_argument("--tenant", required=True)
    p.add_argument("url")
    p.add_argument("--max-pages", type=int, default=get_settings().crawl_max_pages)
    p.add_argument("--max-depth", type=int, default=5)
    p.add_argument("--include", action="append", default=[], help="regex a URL must match (repeatable)")
    p.add_argument("--exclude", action="append", default=[], help="regex a URL must not match (repeatable)")
    p.add_argument("--include-subdomains", action="store_true")
    p.add_argument("--recrawl-hours", type=float, default=24 * 7)
    p.set_defaults(func=cmd_register_website)

    p = sub.add_parser("status", help="crawl status of websites")
    p.add_argument("--tenant")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("retry-pages", help="release a tenant's quarantined (and backing-off) pages for a new page run")
    p.add_argument("--tenant", required=True)
    p.set_defaults(func=cmd_retry_pages)


def _add_knowledge_commands(sub: argparse._SubParsersAction) -> None:
    """The tenant's own knowledge: manual texts and FAQ entries."""
    p = sub.add_parser("add-manual", help="add or replace a tenant's manual text (chunk type 'manual')")
    p.add_argument("--tenant", required=True)
    p.add_argument("--title", required=True)
    p.add_argument("--file", required=True, help="UTF-8 text file, or - for stdin")
    p.set_defaults(func=cmd_add_manual)

    p = sub.add_parser("add-faq", help="add or replace one FAQ entry (chunk type 'faq')")
    p.add_argument("--tenant", required=True)
    p.add_argument("--question", required=True)
    p.add_argument("--answer", required=True)
    p.set_defaults(func=cmd_add_faq)


def _add_retrieval_commands(sub: argparse._SubParsersAction) -> None:
    """Retrieval as the chat backend calls it, and its evaluation."""
    p = sub.add_parser("ask", help="retrieve context for a question, as the chat backend would")
    p.add_argument("--tenant", required=True)
    p.add_argument("question")
    p.add_argument("--primary-source", default="website", choices=["website", "manual", "faq"])
    p.add_argument("--secondary", action="append", default=[], choices=["website", "manual", "faq"])
    p.add_argument("--primary-budget", type=int, default=800)
    p.add_argument("--secondary-budget", type=int, default=600)
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("eval", help="MRR / nDCG@10 / recall@k per retrieval method over a labelled query set")
    p.add_argument("--tenant", required=True)
    p.add_argument("--queries", required=True, help="JSONL labelled queries")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--details", metavar="FILE", help="write one JSON line per query: where each method ranked"
                   " its relevant page, whether it reached the packed context, the top pages")
    p.set_defaults(func=cmd_eval)


def _add_stack_commands(sub: argparse._SubParsersAction) -> None:
    """The application's processes: the stack, the metrics exporter, the demo."""
    p = sub.add_parser("up", help="start the database and Dagster (webserver + daemon) for your websites; Ctrl-C stops")
    p.add_argument("--host", default="127.0.0.1", help="Dagster UI address")
    p.add_argument("--port", type=int, default=3000, help="Dagster UI port")
    p.add_argument("--data-dir", help="embedded database and Dagster home (default: PILITO_DATA_DIR or .pilito)")
    p.add_argument("--in-process-embedding", action="store_true",
                   help="no embedding service: every page run loads the model itself")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("metrics", help="serve ingestion metrics (Prometheus) read from the Dagster instance")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9108)
    p.set_defaults(func=cmd_metrics)

    p = sub.add_parser("embed-serve", help="serve the configured local embedding model (OpenAI-compatible"
                       " /v1/embeddings, batching concurrent requests); Ctrl-C or SIGTERM stops")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)
    p.add_argument("--max-batch-texts", type=int, default=256, help="texts of one model call at most")
    p.set_defaults(func=cmd_embed_serve)

    p = sub.add_parser("demo", help="serve the sample site, crawl it through Dagster, answer two questions")
    p.add_argument("--port", type=int, default=3000, help="Dagster UI port")
    p.add_argument("--data-dir", help="embedded database and Dagster home (default: PILITO_DATA_DIR or .pilito)")
    p.add_argument("--site-port", type=int, default=8765, help="sample website port on 127.0.0.1")
    p.add_argument("--exit-after-answers", action="store_true", help="stop instead of keeping the UI up")
    p.add_argument("--in-process-embedding", action="store_true",
                   help="no embedding service: every page run loads the model itself")
    p.set_defaults(func=cmd_demo)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("LC_ALL", "C.UTF-8")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no model-loading bars in CLI output
    get_settings.cache_clear()  # a command reads the environment as it is when it starts
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, LookupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
