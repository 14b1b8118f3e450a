"""Training on a tiny synthetic corpus: the loss falls and the gold article ranks first."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lexrerank.errors import LexrerankError
from reranker.attentive_cnn import AttentiveCNNReranker
from reranker.checkpoint import load_reranker, save_checkpoint
from reranker.encoder import DEFAULT_ENCODER, encoder_fingerprint, load_encoder
from reranker.paraformer import Paraformer
from reranker.training import TrainingExample, mrr_of_gold, train_reranker


@pytest.fixture(scope="module")
def examples(tiny_queries, tiny_corpus):
    ids = list(tiny_corpus)
    return [
        TrainingExample(query, [doc], [c for c in ids if c != doc], qid=f"Q-{doc}")
        for doc, query in tiny_queries.items()
    ]


def _ranked_first(model, tiny_corpus, tiny_queries) -> int:
    """How many queries rank their gold first among ALL corpus articles."""
    ids = list(tiny_corpus)
    vectors = model.encode_articles([tiny_corpus[d] for d in ids])
    return sum(
        ids[int(np.argmax(model.rerank(query, vectors).scores))] == doc
        for doc, query in tiny_queries.items()
    )


def test_training_mrr_of_gold():
    assert mrr_of_gold([0.1, 0.9, 0.3], [False, True, False]) == 1.0
    assert mrr_of_gold([0.5, 0.9, 0.3], [True, False, False]) == 0.5
    assert mrr_of_gold([1.0, 1.0, 1.0], [False, False, True]) == pytest.approx(1 / 3)  # ties
    assert mrr_of_gold([0.2, 0.1], [False, False]) == 0.0


def test_training_paraformer_frozen(encoder, examples, tiny_corpus, tiny_queries):
    torch.manual_seed(0)
    model = Paraformer(encoder)
    assert _ranked_first(model, tiny_corpus, tiny_queries) < len(tiny_queries)
    report = train_reranker(
        model,
        examples,
        tiny_corpus,
        dev_examples=examples,
        epochs=15,
        lr=3e-3,
        batch_size=4,
        negatives_per_query=11,
        patience=15,
        show_progress=False,
    )
    assert report.train_loss[-1] < 0.5 * report.train_loss[0]
    assert len(report.dev_metric) == report.epochs_run == 15
    assert report.best_dev_metric == max(report.dev_metric) > report.dev_metric_initial
    assert 1 <= report.best_epoch <= 15 and report.seconds > 0
    assert _ranked_first(model, tiny_corpus, tiny_queries) == len(tiny_queries)
    # Training the head leaves the encoder (and so the stored vectors' version) untouched.
    assert model.model_version == encoder_fingerprint(DEFAULT_ENCODER)
    assert not model.head.training


def test_training_attentive_cnn(encoder, examples, tiny_corpus, tiny_queries):
    texts = [s for sents in tiny_corpus.values() for s in sents]
    model = AttentiveCNNReranker.from_corpus(texts, encoder, seed=0, device="cpu")
    version = model.model_version
    report = train_reranker(
        model,
        examples,
        tiny_corpus,
        epochs=8,
        lr=3e-3,
        batch_size=4,
        negatives_per_query=6,
        show_progress=False,
    )
    assert report.train_loss[-1] < 0.5 * report.train_loss[0]
    assert report.best_epoch == report.epochs_run == 8 and report.dev_metric == []
    assert _ranked_first(model, tiny_corpus, tiny_queries) == len(tiny_queries)
    assert model.model_version != version  # retrained -> article vectors must be recomputed


def test_training_pairwise_is_deterministic(encoder, examples, tiny_corpus, tiny_queries):
    heads = []
    for _ in range(2):
        torch.manual_seed(123)  # the same fresh head; training seeds its own RNGs
        model = Paraformer(encoder)
        report = train_reranker(
            model,
            examples,
            tiny_corpus,
            epochs=10,
            lr=3e-3,
            batch_size=4,
            negatives_per_query=8,
            loss="pairwise",
            seed=7,
            show_progress=False,
        )
        heads.append(model.head_version)
    assert heads[0] == heads[1]
    assert report.train_loss[-1] < 0.5 * report.train_loss[0]
    assert _ranked_first(model, tiny_corpus, tiny_queries) == len(tiny_queries)


def test_training_early_stopping_restores_best(encoder, examples, tiny_corpus):
    torch.manual_seed(0)
    model = Paraformer(encoder)
    dev = examples[:6]
    report = train_reranker(
        model,
        examples,
        tiny_corpus,
        dev_examples=dev,
        epochs=40,
        lr=3e-3,
        batch_size=4,
        negatives_per_query=6,
        patience=2,
        show_progress=False,
    )
    # Dev MRR saturates quickly, then two epochs without improvement stop the run.
    assert report.stopped_early and report.epochs_run < 40
    assert report.epochs_run == report.best_epoch + 2
    # The restored state is the best epoch's: its dev MRR is the best one reported.
    ids = list(tiny_corpus)
    vectors = dict(zip(ids, model.encode_articles([tiny_corpus[d] for d in ids]), strict=True))
    values = []
    for ex in dev:
        row = [*ex.positives, *ex.candidates]
        scores = model.rerank(ex.query, [vectors[d] for d in row]).scores
        values.append(mrr_of_gold(scores, [d in ex.positives for d in row]))
    assert np.mean(values) == pytest.approx(report.best_dev_metric, abs=1e-6)


def test_training_rejects_bad_input(encoder, examples, tiny_corpus):
    model = Paraformer(encoder)
    bad = [TrainingExample("q", ["no-such-article"], ["601"], qid="R01-1")]
    with pytest.raises(LexrerankError, match="R01-1:no-such-article"):
        train_reranker(model, bad, tiny_corpus, show_progress=False)
    with pytest.raises(LexrerankError, match="no gold"):
        train_reranker(model, [TrainingExample("q", [], ["601"])], tiny_corpus)
    with pytest.raises(LexrerankError, match="listwise, pairwise"):
        train_reranker(model, examples, tiny_corpus, loss="pointwise")


def test_training_finetune_encoder(examples, tiny_corpus, tmp_path):
    # Its own encoder instance: fine-tuning must not touch the session-wide one.
    torch.manual_seed(0)
    model = Paraformer(load_encoder(None, device="cpu"), finetune_encoder=True)
    before = {k: v.clone() for k, v in model.encoder.state_dict().items() if "word_emb" in k}
    report = train_reranker(
        model,
        examples[:4],
        tiny_corpus,
        dev_examples=examples[:2],
        epochs=1,
        batch_size=2,
        negatives_per_query=2,
        encoder_lr=1e-4,
        show_progress=False,
    )
    assert report.epochs_run == 1
    after = model.encoder.state_dict()
    assert any(not torch.equal(v, after[k]) for k, v in before.items())
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert model.model_version != encoder_fingerprint(DEFAULT_ENCODER)
    vectors = model.encode_articles(list(tiny_corpus.values()))
    scores = model.rerank("rent", vectors).scores
    # The fine-tuned encoder travels with the checkpoint and defines the version.
    out = save_checkpoint(tmp_path / "ft", model)
    assert (out / "encoder" / "modules.json").is_file()
    loaded = load_reranker(out, device="cpu")
    assert loaded.model_version == model.model_version
    np.testing.assert_allclose(loaded.rerank("rent", vectors).scores, scores, atol=1e-5)
