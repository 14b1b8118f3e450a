"""Checkpoints: round trips, integrity checks, clear errors, atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import reranker.checkpoint as checkpoint
from lexrerank.errors import LexrerankError
from reranker.attentive_cnn import AttentiveCNNReranker
from reranker.checkpoint import load_reranker, save_checkpoint
from reranker.encoder import resolve_encoder_path
from reranker.paraformer import Paraformer

QUERY = "Can a child sign a contract without the permission of a parent?"


@pytest.fixture()
def paraformer(encoder):
    torch.manual_seed(0)
    model = Paraformer(encoder)
    with torch.no_grad():  # make the head differ from a fresh one
        for p in model.head.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model


@pytest.fixture()
def acnn(encoder, tiny_corpus):
    texts = [s for sents in tiny_corpus.values() for s in sents]
    return AttentiveCNNReranker.from_corpus(texts, encoder, seed=0, device="cpu")


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


def test_checkpoint_paraformer_round_trip(paraformer, tiny_corpus, tmp_path):
    articles = list(tiny_corpus.values())
    vectors = paraformer.encode_articles(articles)
    before = paraformer.rerank(QUERY, vectors)
    out = save_checkpoint(tmp_path / "ckpt", paraformer, {"fusion": {"alpha": 0.5}})
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "paraformer"
    assert config["encoder"] == "all-MiniLM-L6-v2"
    assert config["encoder_fingerprint"] == paraformer.model_version == config["model_version"]
    assert config["model"]["dim"] == 384
    assert config["fusion"] == {"alpha": 0.5}
    assert config["cutoff"] == {} and config["training"] == {} and config["metrics"] == {}
    assert (out / "model.safetensors").stat().st_size < 20_000_000
    loaded = load_reranker(out, device="cpu")
    assert isinstance(loaded, Paraformer)
    assert loaded.model_version == paraformer.model_version
    assert loaded.head_version == paraformer.head_version
    assert loaded.checkpoint_config["fusion"] == {"alpha": 0.5}
    after = loaded.rerank(QUERY, vectors)
    np.testing.assert_array_equal(after.scores, before.scores)


def test_checkpoint_attentive_round_trip(acnn, tiny_corpus, tmp_path):
    articles = list(tiny_corpus.values())
    stored = acnn.encode_articles(articles)
    before = acnn.rerank(QUERY, stored)
    out = save_checkpoint(tmp_path / "acnn", acnn, {"metrics": {"f2": 0.5}})
    assert (out / "vocab.json").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "attentive-cnn" and config["model_version"] == acnn.model_version
    assert config["model"]["vocab_size"] == len(acnn.vocab)
    loaded = load_reranker(out, device="cpu")
    assert isinstance(loaded, AttentiveCNNReranker)
    assert loaded.model_version == acnn.model_version and loaded.vocab == acnn.vocab
    np.testing.assert_array_equal(loaded.rerank(QUERY, stored).scores, before.scores)
    re_encoded = loaded.encode_articles(articles)
    np.testing.assert_array_equal(re_encoded[0].vector, stored[0].vector)


def test_checkpoint_tampered_weights(paraformer, tmp_path):
    out = save_checkpoint(tmp_path / "ckpt", paraformer)
    data = bytearray((out / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (out / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(LexrerankError, match="sha256"):
        load_reranker(out, device="cpu")


def test_checkpoint_encoder_fingerprint_mismatch(paraformer, tmp_path):
    out = save_checkpoint(tmp_path / "ckpt", paraformer)
    # A copy of the default encoder with one changed config file (big files linked, not copied).
    shipped = Path(resolve_encoder_path(None))
    other = tmp_path / "other-encoder"
    for f in shipped.rglob("*"):
        if f.is_file():
            target = other / f.relative_to(shipped)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(f)
    (other / "sentence_bert_config.json").unlink()
    (other / "sentence_bert_config.json").write_text(
        '{"max_seq_length": 128, "do_lower_case": false}'
    )
    with pytest.raises(LexrerankError, match="fingerprint") as info:
        load_reranker(out, device="cpu", encoder=str(other))
    assert "LEXRERANK_ENCODER" in str(info.value)
    # The same through the recorded name: the config's fingerprint no longer matches.
    config = json.loads((out / "config.json").read_text())
    config["encoder_fingerprint"] = "0" * 16
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(LexrerankError, match="fingerprint"):
        load_reranker(out, device="cpu")


def test_checkpoint_unknown_kind_and_not_a_checkpoint(paraformer, tmp_path):
    out = save_checkpoint(tmp_path / "ckpt", paraformer)
    config = json.loads((out / "config.json").read_text())
    config["kind"] = "bert-cross-encoder"
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(LexrerankError, match="paraformer, attentive-cnn"):
        load_reranker(out)
    with pytest.raises(LexrerankError, match="not a reranker checkpoint"):
        load_reranker(tmp_path / "nowhere")


def test_checkpoint_failed_save_leaves_nothing(paraformer, tmp_path, monkeypatch):
    target = tmp_path / "ckpt"
    # A config that is not JSON fails before anything is written.
    with pytest.raises(LexrerankError, match="JSON"):
        save_checkpoint(target, paraformer, {"metrics": {"bad": object()}})
    assert not target.exists() and _siblings(target) == []

    # A failure in the middle of writing leaves no directory and no temporary files.
    def broken_save_file(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", broken_save_file)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(target, paraformer)
    assert not target.exists() and _siblings(target) == []
    monkeypatch.undo()

    # Overwriting: a failure keeps the previous checkpoint intact and loadable.
    save_checkpoint(target, paraformer, {"metrics": {"run": 1}})
    original = {p.name: p.read_bytes() for p in target.iterdir()}
    monkeypatch.setattr(checkpoint, "save_file", broken_save_file)
    with pytest.raises(OSError):
        save_checkpoint(target, paraformer, {"metrics": {"run": 2}})
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in target.iterdir()} == original
    assert _siblings(target) == []
    assert load_reranker(target, device="cpu").checkpoint_config["metrics"] == {"run": 1}
    # A successful overwrite replaces it.
    save_checkpoint(target, paraformer, {"metrics": {"run": 3}})
    assert json.loads((target / "config.json").read_text())["metrics"] == {"run": 3}
    assert _siblings(target) == []


def test_checkpoint_refuses_foreign_directory(paraformer, tmp_path):
    foreign = tmp_path / "docs"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(LexrerankError, match="not a lexrerank checkpoint"):
        save_checkpoint(foreign, paraformer)
    assert (foreign / "notes.txt").read_text() == "keep me"
