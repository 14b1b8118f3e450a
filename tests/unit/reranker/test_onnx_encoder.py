"""reranker.onnx_encoder: the ONNX Runtime encoder backends against torch fp32.

Exports the packaged all-MiniLM-L6-v2 (a few seconds each, once per variant for the module).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lexrerank.config import get_settings
from lexrerank.errors import LexrerankError
from reranker import onnx_encoder
from reranker.checkpoint import load_reranker, read_config, served_model_version
from reranker.encoder import encoder_fingerprint, load_encoder, resolve_encoder_path
from reranker.model_names import backend_for
from reranker.onnx_encoder import (
    OnnxTransformerBody,
    export_onnx,
    serve_with_backend,
    to_onnx_backend,
)
from reranker.registry import checkpoint_path

TEXTS = [
    "A minor may rescind a juridical act performed without the consent of a representative",
    "Is the obligor liable when performance becomes impossible?",
    "Article 5 (1) A minor must obtain the consent of the legal representative. " * 20,  # cut
    "",
]

# Questions as users ask them (none of them in the calibration texts).
QUESTIONS = [
    "If a person buys a house and the seller had already sold it to someone else, who owns it?",
    "May a landlord terminate the lease when the tenant pays the rent three months late?",
    "Is a promise to give a gift binding if it was not made in writing?",
    "When does the period of prescription start for a claim for damages caused by a tort?",
    "Can the creditor demand payment from a joint guarantor before suing the principal debtor?",
    "Does a person who found a lost wallet acquire ownership if the owner never appears?",
    "A child aged ten broke a window; are the parents liable for the damage?",
    "Is a contract void when both parties were mistaken about an essential element?",
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


def _swapped(backend: str, cache: Path):
    path = resolve_encoder_path(None)
    encoder = load_encoder(None, device="cpu")
    variant = to_onnx_backend(encoder, path, encoder_fingerprint(path), backend, cache)
    return encoder, variant


def _cosines(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    return (torch.nn.functional.normalize(a, dim=-1)
            * torch.nn.functional.normalize(b, dim=-1)).sum(-1).numpy()


def test_onnx_fp32_gives_the_torch_embeddings(cache: Path) -> None:
    reference = load_encoder(None, device="cpu")
    encoder, variant = _swapped("onnx", cache)
    assert isinstance(encoder[0].model, OnnxTransformerBody)
    assert variant.startswith("onnx:")
    for encode in ("encode_query", "encode_document"):
        got = getattr(encoder, encode)(TEXTS, convert_to_tensor=True)
        want = getattr(reference, encode)(TEXTS, convert_to_tensor=True)
        assert got.shape == want.shape == (len(TEXTS), 384)
        assert _cosines(got, want).min() > 0.9999


def test_int8_is_close_and_its_own_variant(cache: Path) -> None:
    reference = load_encoder(None, device="cpu")
    encoder, variant = _swapped("onnx-int8", cache)
    _, fp32_variant = _swapped("onnx", cache)
    assert variant.startswith("onnx-int8:") and variant != fp32_variant
    cos = _cosines(encoder.encode_query(TEXTS, convert_to_tensor=True),
                   reference.encode_query(TEXTS, convert_to_tensor=True))
    # Quantised weights move the vectors a little, never to another meaning.
    assert cos.min() > 0.95 and cos.mean() > 0.97
    assert cos.min() < 0.99999  # it is really the quantised graph


def test_smoothed_int8_is_nearer_torch_than_int8_and_its_own_variant(cache: Path) -> None:
    reference = load_encoder(None, device="cpu")
    smoothed, variant = _swapped("onnx-int8-smooth", cache)
    plain, int8_variant = _swapped("onnx-int8", cache)
    assert variant.startswith("onnx-int8-smooth:") and ":sq" in variant
    assert variant != int8_variant
    want = reference.encode_query(QUESTIONS, convert_to_tensor=True)
    # One query per call, as a worker encodes them (dynamic int8 depends on the batch).
    near = _cosines(smoothed.encode_query(QUESTIONS, batch_size=1, convert_to_tensor=True),
                    want)
    far = _cosines(plain.encode_query(QUESTIONS, batch_size=1, convert_to_tensor=True), want)
    # Smoothing removes most of int8's error (README: mean cosine 0.9926 -> 0.9975 on 150
    # COLIEE queries with the fine-tuned encoder; 0.0055 -> 0.0016 of 1 - cosine here), yet
    # it is still a quantised graph.
    assert (1 - near.mean()) < 0.6 * (1 - far.mean())
    assert near.min() < 0.99999
    record = (onnx_encoder.export_onnx(reference, resolve_encoder_path(None),
                                       encoder_fingerprint(resolve_encoder_path(None)),
                                       "onnx-int8-smooth", cache) / "export.json").read_text()
    assert '"alpha": 0.7' in record and '"calibration_texts": 20' in record


def test_an_export_is_cached_and_a_failed_one_leaves_nothing(tmp_path: Path,
                                                             monkeypatch) -> None:
    path = resolve_encoder_path(None)
    encoder = load_encoder(None, device="cpu")
    fingerprint = encoder_fingerprint(path)

    def broken(src: Path, dst: Path) -> None:
        raise RuntimeError("quantiser crashed")

    monkeypatch.setattr(onnx_encoder, "_quantize", broken)
    with pytest.raises(RuntimeError, match="quantiser crashed"):
        export_onnx(encoder, path, fingerprint, "onnx-int8", tmp_path)
    root = tmp_path / "encoders" / "onnx"
    assert list(root.iterdir()) == []  # no half-written model left behind
    monkeypatch.undo()
    first = export_onnx(encoder, path, fingerprint, "onnx-int8", tmp_path)

    def must_not_export(*_args, **_kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx_encoder, "export_graph", must_not_export)
    assert export_onnx(encoder, path, fingerprint, "onnx-int8", tmp_path) == first
    assert sorted(p.name for p in first.iterdir()) == ["export.json", "model.onnx"]


def test_load_reranker_serves_an_ensemble_on_one_exported_encoder(cache: Path) -> None:
    path = checkpoint_path("default", "en")
    reference = load_reranker(path, device="cpu", cache_dir=cache)
    served = load_reranker(path, device="cpu", cache_dir=cache, backend="onnx-int8")
    again = load_reranker(path, device="cpu", cache_dir=cache, backend="onnx-int8")
    encoders = {id(m.encoder) for m in served.members.values() if hasattr(m, "encoder")}
    assert len(encoders) == 1  # the dense model and the Paraformer share it, as in torch
    for name, member in served.members.items():
        assert member.model_version != reference.members[name].model_version
        assert member.encoder_backend.startswith("onnx-int8:")
    assert served.model_version != reference.model_version
    assert again.model_version == served.model_version
    # What a reindex job computes without loading the model is what the workers serve.
    for name, member in served.members.items():
        config = read_config(checkpoint_path(name, "en"))
        assert served_model_version(config, "onnx-int8") == member.model_version
        assert served_model_version(config, "torch") == reference.members[name].model_version
    articles = [["A minor must obtain the consent of the legal representative."],
                ["A lease of land is effective against third parties when registered."],
                ["The obligor is liable for damages when performance is impossible."]]
    query = "Can a minor rescind a contract made without consent?"
    for name, member in served.members.items():
        want = reference.members[name].rerank(
            query, reference.members[name].encode_articles(articles)).scores
        got = np.asarray(member.rerank(query, member.encode_articles(articles)).scores)
        want = np.asarray(want)
        assert list(np.argsort(-got)) == list(np.argsort(-want)) and np.argmax(got) == 0
        # Paraformer scores are logits (a range of ~8 here), dense ones cosines.
        assert np.max(np.abs(got - want)) < 0.05 * np.ptp(want)


def test_torch_is_the_model_itself_and_unknown_backends_are_refused(cache: Path) -> None:
    model = object()
    assert serve_with_backend(model, "torch", cache) is model
    with pytest.raises(LexrerankError, match="unknown encoder backend 'tensorrt'"):
        serve_with_backend(model, "tensorrt", cache)


def test_an_encoder_already_on_one_backend_is_not_swapped_to_another(cache: Path) -> None:
    encoder, _ = _swapped("onnx", cache)
    path = resolve_encoder_path(None)
    with pytest.raises(LexrerankError, match="already runs as onnx:"):
        to_onnx_backend(encoder, path, encoder_fingerprint(path), "onnx-int8", cache)


def test_the_setting_accepts_the_backends_and_refuses_others(monkeypatch) -> None:
    monkeypatch.setenv("LEXRERANK_ENCODER_BACKEND", " onnx-int8 ")
    assert get_settings().encoder_backend == "onnx-int8"
    monkeypatch.setenv("LEXRERANK_ENCODER_BACKEND", "openvino")
    with pytest.raises(LexrerankError, match="LEXRERANK_ENCODER_BACKEND='openvino' is not one"):
        get_settings()
    monkeypatch.setenv("LEXRERANK_ENCODER_BACKEND", "onnx-int8-smooth")
    assert get_settings().encoder_backend == "onnx-int8-smooth"
    monkeypatch.delenv("LEXRERANK_ENCODER_BACKEND")
    assert get_settings().encoder_backend == "auto"  # the default (README, "CPU encoder backends")


def test_auto_serves_each_language_its_measured_variant(cache: Path) -> None:
    assert backend_for("auto", ["en"]) == "onnx-int8-smooth"
    assert backend_for("auto", ["ja"]) == backend_for("auto", ["vi"]) == "onnx"
    # A checkpoint of several languages, or of none recorded, gets the fp32 graph.
    assert backend_for("auto", ["en", "ja"]) == backend_for("auto", None) == "onnx"
    assert backend_for("torch", ["en"]) == "torch"  # a named backend is kept
    english = load_reranker(checkpoint_path("dense", "en"), device="cpu", cache_dir=cache,
                            backend="auto")
    assert english.encoder_backend.startswith("onnx-int8-smooth:")
    config = read_config(checkpoint_path("dense", "en"))
    assert served_model_version(config, "auto") == english.model_version
    assert served_model_version(config, "auto") == served_model_version(config,
                                                                        "onnx-int8-smooth")
    japanese = read_config(checkpoint_path("dense", "ja"))
    assert served_model_version(japanese, "auto") == served_model_version(japanese, "onnx")
    assert served_model_version(japanese, "auto") != served_model_version(japanese, "torch")


def test_a_cuda_device_is_overridden_so_versions_agree_with_cpu_indexers(cache: Path,
                                                                         caplog) -> None:
    path = checkpoint_path("dense", "en")
    on_cpu = load_reranker(path, device="cpu", cache_dir=cache, backend="onnx")
    with caplog.at_level("WARNING", logger="reranker.checkpoint"):
        asked_cuda = load_reranker(path, device="cuda", cache_dir=cache, backend="onnx")
    assert asked_cuda.encoder.device.type == "cpu"
    assert asked_cuda.model_version == on_cpu.model_version
    assert "runs on CPU" in caplog.text


def test_an_export_another_process_finished_first_is_kept(cache: Path, tmp_path: Path,
                                                          monkeypatch) -> None:
    path = resolve_encoder_path(None)
    encoder = load_encoder(None, device="cpu")
    fingerprint = encoder_fingerprint(path)
    finished = export_onnx(encoder, path, fingerprint, "onnx-int8", cache)
    root = tmp_path / "encoders" / "onnx"
    real_quantize = onnx_encoder._quantize

    def sibling_wins(src: Path, dst: Path) -> None:
        real_quantize(src, dst)
        shutil.copytree(finished, root / finished.name)  # its rename lands before ours

    monkeypatch.setattr(onnx_encoder, "_quantize", sibling_wins)
    out = export_onnx(encoder, path, fingerprint, "onnx-int8", tmp_path)
    assert out == root / finished.name
    assert [p.name for p in root.iterdir()] == [finished.name]  # ours dropped, none half-made
