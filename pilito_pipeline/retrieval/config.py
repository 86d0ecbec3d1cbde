"""Every knob of retrieval, with its default, in one options object."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pilito_pipeline.settings import Settings

RerankPassage = Literal["tldr", "full"]
Arms = Literal["hybrid", "dense", "bm25", "latent"]
Fusion = Literal["evidence", "rrf"]


@dataclass(frozen=True)
class RetrievalConfig:
    """Defaults of the pipeline; feature flags may override the ones they name at run time."""

    arms: Arms = "hybrid"
    """Which searches run: all fused, or one alone (the evaluation's per-method rows)."""
    dense_top_k: int = 50
    """Dense candidates per group (flag `dense_top_k`). 50 over 20 with evidence fusion: tune-half
    MRR of four sets 0.646 vs 0.643 (README: retrieval tuning)."""
    sparse_top_k: int = 50
    """BM25 candidates per group (flag `sparse_top_k`); 50 over 15, as above."""
    fused_limit: int = 20
    """Unique chunks kept after fusion."""
    fusion: Fusion = "evidence"
    """How the two lists are fused (`retrieval/fusion.py`): scores on an absolute scale, so a blind
    arm adds little (tune halves of four sets: mean MRR 0.646 vs 0.624 for RRF), or reciprocal
    ranks."""
    dense_floor: float = 0.8
    """Evidence fusion: the cosine at which dense evidence starts (multilingual-e5's cosines of
    unrelated text sit around 0.75-0.8). 0.8 over 0.75 and 0.85 on the tune halves."""
    rrf_k: int = 20
    """RRF only. Measured on the Persian handbook set (202 queries): 20 over 60, hybrid MRR +0.003."""
    bm25_weight: float = 1.0
    """Fusion weight of the BM25 list; 0 means BM25 is not searched."""
    dense_weight: float = 1.0
    """Fusion weight of the dense list for non-Persian queries; 0 means dense is not searched."""
    persian_dense_weight: float = 1.0
    """Fusion weight of the dense list for Persian queries (BM25's is 1). 0 when the embedding model
    does not cover Persian (the packaged MiniLM is English-only: its vocabulary splits Persian
    into single letters), and then dense is not searched for them. Equal weights (dense share 0.5)
    won on the tune halves over 0.4 and 0.6."""
    latent_weight: float = 0.75
    """Evidence fusion: weight of the latent-term arm (`retrieval/latent.py`: the query's learned
    sparse features against the chunks'), for embedders with a sparse head (e5); 0 switches it off.
    Tune halves, mean hybrid MRR of the four larger sets (replayed on stored candidates): 0.685 vs
    0.673 without the arm; 0.75 over 0.5, 1 and 1.5 (README: retrieval tuning)."""
    latent_floor: float = 0.25
    """Evidence fusion: the latent-term cosine at which its evidence starts (as `dense_floor`; the
    best chunk's cosine sits between 0.21 and 0.40). 0.25 over 0, 0.1, 0.15, 0.2, 0.3 and 0.4."""
    dense_blind_below: float = 0.85
    """Evidence fusion: when the best dense cosine is below this (no chunk close to the question)
    and the latent-term arm's best chunk is in another language than the question (a Persian
    question about an English page), that arm is scored against its own best candidate instead
    (cosine / best, evidence from `latent_relative_floor` up), so its ranking decides
    (`fusion.latent_evidence`). Tune halves: cross-lingual hybrid MRR 0.462 → 0.541, handbook
    paraphrases 0.813 → 0.818, informal 0.697 → 0.687, GIMP unchanged; 0.85 over 0.86, 0.87, 0.9."""
    latent_relative_floor: float = 0.7
    """See `dense_blind_below`: 0.7 over 0.8 and 0.9."""
    translated_bm25_weight: float = 1.0
    """Evidence fusion: weight of the translated arm (`retrieval/translate.py`: a Persian query's
    words mapped to the tenant's English vocabulary, searched with BM25 in its English chunks); 0
    switches it off. Tune halves (README: retrieval tuning): cross-lingual hybrid MRR 0.446 vs 0.372,
    informal 0.698 vs 0.694, handbook paraphrases 0.807 vs 0.807. 1 over 0.5."""
    translate_min_similarity: float = 0.90
    """The cosine a word's nearest English term needs to count as its translation (0.90 over 0.91
    and 0.92 on the tune halves; e5's cosines of single words sit between 0.84 and 0.95)."""
    translate_min_terms: int = 2
    """Fewer translated words than this and the arm stays out: with one, the handbook's few
    English pages rose for unrelated Persian questions (handbook tune half 0.759 vs 0.807)."""
    dense_tldr: bool = False
    """Dense search also over the TL;DR embeddings (a chunk scores the better of its two); they
    exist only when indexing embeds TL;DRs (`EMBED_TLDR`)."""
    variants_bm25: bool = True
    """Persian/mixed queries gain the other variants of the vocabulary doublets they contain as
    BM25 terms (`retrieval/variants.py`). Handbook set: BM25 MRR 0.692 vs 0.679, hybrid 0.789 vs
    0.779 (a first, broader list cost 0.008: see variants_fa.txt)."""
    variants_dense: bool = False
    """... and appended to the text the dense arm embeds: off (handbook: dense MRR 0.767 vs 0.769,
    recall@10 0.926 vs 0.916, hybrid MRR 0.791 vs 0.789: within noise, and the query grows)."""
    informal_bm25: bool = True
    """Persian queries also search the stems of words with spoken endings (`text.informal`:
    «فایلو» → فایل, «سرورای» → سرور). Tune halves: informal set hybrid MRR 0.700 vs 0.685, handbook
    paraphrases 0.802 vs 0.807. (Searching the formal verb forms too cost BM25 0.008: dropped.)"""
    informal_dense: bool = True
    """The dense arm embeds the formal form of a Persian query instead of the spoken one. Informal
    set, tune half: dense MRR 0.514 vs 0.473, hybrid 0.618 vs 0.600."""
    rerank_top_k: int = 8
    """Chunks kept per group after reranking (flag `rerank_top_k`)."""
    rerank_model: str = ""
    """Cross-encoder name or local path; empty: none unless the flags name one."""
    rerank_passage: RerankPassage = "tldr"
    """What the cross-encoder reads beside the query: section title + TL;DR (fast) or full text."""
    rerank_max_length: int = 128
    """Tokens per (query, passage) pair fed to the cross-encoder; the dominant cost of reranking."""
    rerank_batch_size: int = 32
    bm25_k1: float = 1.5
    bm25_b: float = 0.5
    """k1 1.5 / b 0.5 over 1.2 / 0.75: handbook hybrid MRR 0.766 vs 0.762, recall@10 0.950 vs 0.946
    (section-sized chunks; less length normalisation)."""
    hnsw_ef_search: int = 400
    """For tenants with their own partial HNSW indexes (`store.ann_indexes`; everyone else gets an
    exact scan). Measured: tenant-filtered recall@20 on near-duplicate-heavy data rose from 0.85 (100) to 0.93 (400)."""
    complex_query_factor: float = 1.5
    """Candidate counts are multiplied by this for multi-part questions."""
    near_duplicate_threshold: float = 0.85
    """Jaccard similarity of word shingles above which a lower-ranked chunk is dropped."""
    statement_timeout_ms: int = 3_000
    tokenizer_path: str = ""
    """tokenizer.json used to count context tokens; empty: XLM-RoBERTa's (multilingual-e5's), see `packing`."""

    @classmethod
    def from_settings(cls, settings: Settings) -> RetrievalConfig:
        """The defaults, with what the environment decides: the cross-encoder, the TL;DR arm when
        TL;DRs are embedded (`EMBED_TLDR`), and no dense weight (nor translated arm) for Persian when
        the embedding model does not cover it (`EMBEDDING_LANGUAGES`)."""
        return cls(
            rerank_model=settings.rerank_model,
            dense_tldr=settings.embed_tldr,
            persian_dense_weight=cls.persian_dense_weight if settings.embedding_covers("fa") else 0.0,
            translated_bm25_weight=cls.translated_bm25_weight if settings.embedding_covers("fa") else 0.0,
        )

    def __post_init__(self) -> None:
        if self.arms not in ("hybrid", "dense", "bm25", "latent"):
            raise ValueError(f"RetrievalConfig.arms must be 'hybrid', 'dense', 'bm25' or 'latent', got {self.arms!r}")
        for name in ("dense_top_k", "sparse_top_k", "fused_limit", "rrf_k", "rerank_top_k", "translate_min_terms",
                     "rerank_max_length", "rerank_batch_size", "hnsw_ef_search", "statement_timeout_ms"):
            if getattr(self, name) < 1:
                raise ValueError(f"RetrievalConfig.{name} must be at least 1, got {getattr(self, name)}")
        if self.rerank_passage not in ("tldr", "full"):
            raise ValueError(f"RetrievalConfig.rerank_passage must be 'tldr' or 'full', got {self.rerank_passage!r}")
        if self.fusion not in ("evidence", "rrf"):
            raise ValueError(f"RetrievalConfig.fusion must be 'evidence' or 'rrf', got {self.fusion!r}")
        for name in ("dense_floor", "latent_floor", "latent_relative_floor", "dense_blind_below"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"RetrievalConfig.{name} must be within [0, 1)")
        if not 0 < self.near_duplicate_threshold <= 1:
            raise ValueError("RetrievalConfig.near_duplicate_threshold must be in (0, 1]")
        if not 0 < self.translate_min_similarity <= 1:
            raise ValueError("RetrievalConfig.translate_min_similarity must be in (0, 1]")
        for name in ("bm25_weight", "dense_weight", "persian_dense_weight", "latent_weight", "translated_bm25_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"RetrievalConfig.{name} must not be negative")
        if self.bm25_k1 < 0 or not 0 <= self.bm25_b <= 1:
            raise ValueError("RetrievalConfig.bm25_k1 must be >= 0 and bm25_b within [0, 1]")
