"""Attentive CNN: vocabulary, tokenisation, tower shapes, precomputed == reference."""

from __future__ import annotations

import json
import unicodedata

import numpy as np
import pytest
import torch

from lexrerank.errors import LexrerankError
from reranker.attentive_cnn import ArticleVectors, AttentiveCNNReranker
from reranker.attentive_cnn_tower import AttentiveCNN, init_embeddings_from_encoder
from reranker.word_vocab import WordVocab, split_query_sentences


@pytest.fixture()
def acnn(encoder, tiny_corpus, tiny_queries):
    texts = [s for sents in tiny_corpus.values() for s in sents] + list(tiny_queries.values())
    return AttentiveCNNReranker.from_corpus(texts, encoder, seed=0, device="cpu")


def test_attentive_vocab_build_and_json_round_trip():
    vocab = WordVocab.build(["the cat sat", "the dog sat", "The CAT ran"], min_freq=1)
    assert vocab.tokens[:2] == ["<pad>", "<unk>"]
    # Most frequent first, ties alphabetical: the(3) cat(2) sat(2) dog ran.
    assert vocab.tokens[2:] == ["the", "cat", "sat", "dog", "ran"]
    assert vocab.ids("The cat flew") == [2, 3, WordVocab.UNK]
    assert WordVocab.build(["a a b c"], min_freq=2).tokens[2:] == ["a"]
    assert len(WordVocab.build(["a b c d e"], max_size=4)) == 4
    text = vocab.to_json()
    assert json.loads(text)["tokens"] == vocab.tokens
    assert WordVocab.from_json(text) == vocab
    with pytest.raises(LexrerankError):
        WordVocab.from_json('{"tokens": ["a"]}')


def test_attentive_vietnamese_tokenisation():
    text = "Người lao động có quyền làm việc, 08 giờ/ngày."
    assert WordVocab.tokenize(text) == [
        "người",
        "lao",
        "động",
        "có",
        "quyền",
        "làm",
        "việc",
        "08",
        "giờ",
        "ngày",
    ]
    # Decomposed (NFD) input gives the same tokens as composed input.
    assert WordVocab.tokenize(unicodedata.normalize("NFD", text)) == WordVocab.tokenize(text)


def test_attentive_cjk_and_english_tokenisation():
    assert WordVocab.tokenize("契約は、当事者の合意") == [
        "契",
        "約",
        "は",
        "当",
        "事",
        "者",
        "の",
        "合",
        "意",
    ]
    assert WordVocab.tokenize("Article 537(1) applies") == ["article", "537", "1", "applies"]
    assert split_query_sentences("First one. Second one? 第三。第四") == [
        "First one.",
        "Second one?",
        "第三。",
        "第四",
    ]


def test_attentive_init_embeddings_from_encoder(encoder):
    vocab = WordVocab.build(["contract lessee ｘｙｚｗ"])
    table = init_embeddings_from_encoder(vocab, encoder)
    emb = encoder.transformers_model.get_input_embeddings().weight.detach()
    tok = encoder.tokenizer
    assert table.shape == (len(vocab), emb.shape[1])
    assert torch.equal(table[0], torch.zeros(emb.shape[1]))
    (contract_id,) = tok("contract", add_special_tokens=False)["input_ids"]
    torch.testing.assert_close(table[vocab.index["contract"]], emb[contract_id])
    pieces = tok("lessee", add_special_tokens=False)["input_ids"]
    assert len(pieces) > 1
    torch.testing.assert_close(table[vocab.index["lessee"]], emb[pieces].mean(0))


def test_attentive_tower_shapes_and_masking():
    torch.manual_seed(0)
    model = AttentiveCNN(50, embedding_dim=16, channels=12, attention_dim=8).eval()
    ids = torch.randint(2, 50, (3, 4, 6))
    word_mask = torch.ones(3, 4, 6, dtype=torch.bool)
    word_mask[:, :, 4:] = False
    ids = ids * word_mask
    sentence_mask = torch.tensor(
        [[True, True, True, False], [True, False, False, False], [False] * 4]
    )
    vectors, weights = model.encode(ids, word_mask, sentence_mask)
    assert vectors.shape == (3, 12) and weights.shape == (3, 4)
    torch.testing.assert_close(vectors[:2].norm(dim=-1), torch.ones(2))
    assert torch.equal(vectors[2], torch.zeros(12))  # a text without sentences
    assert (weights[~sentence_mask] == 0).all()
    torch.testing.assert_close(weights[:2].sum(-1), torch.ones(2))
    # More padding (words and sentences) changes nothing.
    pad_ids = torch.zeros(3, 6, 9, dtype=torch.long)
    pad_ids[:, :4, :6] = ids
    pad_wmask = pad_ids != 0
    pad_smask = torch.zeros(3, 6, dtype=torch.bool)
    pad_smask[:, :4] = sentence_mask
    v2, w2 = model.encode(pad_ids, pad_wmask, pad_smask)
    torch.testing.assert_close(v2, vectors, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(w2[:, :4], weights, atol=1e-6, rtol=1e-5)


def test_attentive_encode_articles_and_query(acnn, tiny_corpus):
    articles = [*tiny_corpus.values(), []]
    stored = acnn.encode_articles(articles, batch_size=5)
    assert len(stored) == len(articles)
    for article, item in zip(articles, stored, strict=True):
        assert isinstance(item, ArticleVectors)
        assert item.vector.shape == (256,) and item.vector.dtype == np.float16
        assert item.sentence_weights.shape == (len(article),)
    np.testing.assert_allclose(stored[0].sentence_weights.sum(), 1.0, atol=1e-5)
    query = acnn.encode_query("When is rent due?")
    assert query.shape == (256,) and not query.requires_grad
    # A query string is split into sentences; a list is taken as given.
    torch.testing.assert_close(
        acnn.encode_query("Rent is due. It is monthly."),
        acnn.encode_query(["Rent is due.", "It is monthly."]),
    )


def test_attentive_precomputed_equals_reference(acnn, tiny_corpus):
    articles = list(tiny_corpus.values())
    stored = acnn.encode_articles(articles, batch_size=3)
    query = "Can a child sign a contract without the permission of a parent?"
    out = acnn.rerank(query, stored)
    ref = acnn.rerank_reference(query, articles)
    assert out.scores.shape == (len(articles),) and out.scores.dtype == np.float32
    np.testing.assert_allclose(out.scores, ref.scores, atol=1e-4)
    for w, r in zip(out.weights, ref.weights, strict=True):
        np.testing.assert_allclose(w, r, atol=1e-5)
    # Against full float32: fp16 storage moves a cosine by ~1e-4 (times the scale of 10).
    ref32 = acnn.rerank_reference(query, articles, round_to_storage=False)
    np.testing.assert_allclose(out.scores, ref32.scores, atol=5e-3)
    # Padding invariance: a short article scores the same alone and beside long ones.
    # (Both are rounded to fp16 storage, where a 1e-7 batch-order difference can move one
    # rounding step: the same 1e-4 as above, not an exact match.)
    alone = acnn.rerank_reference(query, [articles[2]])
    np.testing.assert_allclose(alone.scores[0], ref.scores[2], atol=1e-4)


def test_attentive_truncation_and_version(acnn):
    long_query = " ".join(["rent"] * (acnn.max_words + 5))
    stored = acnn.encode_articles([["The lessee must pay rent."]])
    assert acnn.rerank(long_query, stored).query_truncated
    assert not acnn.rerank("rent", stored).query_truncated
    version = acnn.model_version
    assert acnn.model_version == version and len(version) == 16
    with torch.no_grad():
        acnn.model.log_scale.add_(0.1)
    assert acnn.model_version != version
    with pytest.raises(LexrerankError, match="another model"):
        acnn.score(acnn.encode_query("x"), [np.zeros(128, np.float16)])
