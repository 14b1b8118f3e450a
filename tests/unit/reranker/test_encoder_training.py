"""Encoder fine-tuning (contrastive, BM25 hard negatives) and the compact delta it ships as."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lexrerank.errors import LexrerankError
from reranker.encoder import encoder_fingerprint, load_encoder
from reranker.encoder_delta import materialize, round_to_delta, save_delta
from reranker.encoder_training import (
    DEV_METRIC,
    EncoderTrainingOptions,
    _dev_evaluator,
    finetune_encoder,
    self_supervised_pairs,
    training_triples,
)
from reranker.training import TrainingExample


def _passages(tiny_corpus: dict[str, list[str]]) -> dict[str, str]:
    return {doc: " ".join(sentences) for doc, sentences in tiny_corpus.items()}


def _examples(tiny_corpus, tiny_queries) -> list[TrainingExample]:
    ids = sorted(tiny_corpus)
    return [TrainingExample(q, [doc], [d for d in ids if d != doc][:3], qid=doc)
            for doc, q in tiny_queries.items()]


def test_triples_pair_each_gold_with_a_hard_negative_never_a_gold(tiny_corpus, tiny_queries):
    passages = _passages(tiny_corpus)
    examples = _examples(tiny_corpus, tiny_queries)
    examples[0].positives.append(examples[0].candidates[0])  # a second gold in the pool
    rows = training_triples(examples, passages, hard_negatives=2, hard_depth=3, seed=1)
    assert len(rows) == 2 * (len(examples) + 1)
    first = [r for r in rows if r["anchor"] == examples[0].query]
    gold_texts = {passages[g] for g in examples[0].positives}
    assert {r["positive"] for r in first} == gold_texts
    assert all(r["negative"] not in gold_texts for r in first)
    allowed = {passages[c] for c in examples[0].candidates[:3]} - gold_texts
    assert {r["negative"] for r in first} <= allowed
    assert training_triples(examples, passages, 2, 3, seed=1) == rows  # seeded


def test_self_supervised_pairs_come_from_captions_and_sentences(tiny_corpus):
    passages = _passages(tiny_corpus)
    articles = {d: ("(Lease)" if d == "601" else "", s) for d, s in tiny_corpus.items()}
    rows = self_supervised_pairs(articles, passages, per_article=1, seed=0)
    assert {"anchor": "Lease", "positive": passages["601"]} in rows
    assert all(r["anchor"] in tiny_corpus[d] or r["anchor"] == "Lease"
               for d in tiny_corpus for r in rows if r["positive"] == passages[d])
    assert len(rows) == len(tiny_corpus) + 1


def test_finetuning_moves_the_layers_not_the_word_embeddings(tiny_corpus, tiny_queries,
                                                            tmp_path, capsys):
    model = load_encoder(None, device="cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    options = EncoderTrainingOptions(epochs=1, batch_size=4, max_seq_length=32, lr=1e-4)
    report = finetune_encoder(model, _examples(tiny_corpus, tiny_queries),
                              _passages(tiny_corpus), options, show_progress=False)
    assert report.steps == 3 and report.triples == len(tiny_queries)
    # The trainer's loss logs go to stderr: `bench quality --json` prints only its JSON.
    assert capsys.readouterr().out == ""
    after = model.state_dict()
    embedding = next(k for k in after if k.endswith("word_embeddings.weight"))
    assert torch.equal(before[embedding], after[embedding])
    moved = [k for k in after if not torch.equal(before[k], after[k])]
    assert moved and all("embeddings.word_embeddings" not in k for k in moved)

    # The delta: only what moved, in float16; materialised, it encodes as the rounded model.
    base = load_encoder(None, device="cpu")
    delta = save_delta(model, "all-MiniLM-L6-v2", tmp_path / "delta")
    config = json.loads((delta / "delta.json").read_text())
    assert config["tensors"] == len(moved) and config["max_seq_length"] == 32
    assert round_to_delta(model, base) == len(moved)
    full = materialize(delta, tmp_path / "cache")
    again = materialize(delta, tmp_path / "other-cache")
    assert encoder_fingerprint(full) == encoder_fingerprint(again)
    shipped = load_encoder(str(full), device="cpu")
    texts = list(tiny_queries.values())[:4]
    np.testing.assert_allclose(shipped.encode(texts), model.encode(texts), atol=1e-5)
    # Loading the delta directory itself goes through the cache under cache_dir.
    assert load_encoder(str(delta), device="cpu", cache_dir=tmp_path).max_seq_length == 32
    assert any((tmp_path / "encoders").glob("delta-v2-*"))


def test_epoch_selection_keeps_the_epoch_that_scored_best_on_dev(tiny_corpus, tiny_queries):
    model = load_encoder(None, device="cpu")
    examples, passages = _examples(tiny_corpus, tiny_queries), _passages(tiny_corpus)
    train, dev = examples[::2], examples[1::2]
    # A high rate so that the epochs differ on dev; three of them to choose from.
    options = EncoderTrainingOptions(epochs=3, batch_size=2, max_seq_length=32, lr=5e-4,
                                     select_epoch_on_dev=True)
    report = finetune_encoder(model, train, passages, options, dev=dev, show_progress=False)
    scores = report.dev_mrr_by_epoch
    assert len(scores) == 3 and report.chosen_epoch is not None
    assert scores[report.chosen_epoch - 1] == max(scores)
    assert scores.index(max(scores)) == report.chosen_epoch - 1  # the first best on a tie
    # The model handed back is the chosen epoch's, not the last one's.
    again = _dev_evaluator(model, dev, passages)(model)[DEV_METRIC.removeprefix("eval_")]
    assert again == pytest.approx(max(scores), abs=1e-4)


def test_epoch_selection_without_dev_queries_is_refused(tiny_corpus, tiny_queries):
    model = load_encoder(None, device="cpu")
    options = EncoderTrainingOptions(epochs=2, select_epoch_on_dev=True)
    no_gold = [TrainingExample("q", ["not-in-the-corpus"], [], qid="q")]
    for dev in ([], no_gold):
        with pytest.raises(LexrerankError, match="dev queries"):
            finetune_encoder(model, _examples(tiny_corpus, tiny_queries),
                             _passages(tiny_corpus), options, dev=dev, show_progress=False)


def test_a_corrupted_delta_is_refused(tiny_corpus, tiny_queries, tmp_path):
    model = load_encoder(None, device="cpu")
    with torch.no_grad():
        model[0].auto_model.encoder.layer[0].output.dense.bias.add_(0.01)
    delta = save_delta(model, "all-MiniLM-L6-v2", tmp_path / "delta")
    weights = delta / "delta.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(LexrerankError, match="sha256"):
        materialize(delta, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_an_unchanged_encoder_has_no_delta(tmp_path):
    with pytest.raises(LexrerankError, match="no delta"):
        save_delta(load_encoder(None, device="cpu"), "all-MiniLM-L6-v2", tmp_path / "d")
