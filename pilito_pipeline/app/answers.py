"""How a retrieval answer is printed, by `pilito-pipeline ask` and by the demo."""

from __future__ import annotations


def print_answer(result: dict, limit: int = 3) -> None:
    chunks = result["primary_context"] + result["secondary_context"]
    print(f"  method={result['retrieval_method']} chunks={result['total_chunks']}"
          f" latency={result['performance']['latency_ms']:.0f}ms")
    for rank, chunk in enumerate(chunks[:limit], start=1):
        text = " ".join(chunk["text"].split())
        print(f"  {rank}. [{chunk.get('chunk_type')}] {chunk.get('url') or chunk.get('document_id')}"
              f" — {chunk.get('section_title') or ''}\n     {text[:160]}")
