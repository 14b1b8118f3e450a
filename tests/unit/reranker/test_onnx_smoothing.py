"""reranker.onnx_smoothing: SmoothQuant's smoothing keeps the fp32 function and evens channels.

Works on the packaged all-MiniLM-L6-v2's fused fp32 export (a few seconds, once for the
module).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from reranker.encoder import encoder_fingerprint, load_encoder, resolve_encoder_path
from reranker.onnx_encoder import (
    MODEL_FILE,
    SMOOTHING_ALPHA,
    calibration_texts,
    export_onnx,
    graph_inputs,
)
from reranker.onnx_smoothing import activation_ranges, smooth, smoothable_nodes

TEXTS = ["Can a minor rescind a contract made without the consent of a representative?",
         "The lessee may not sublease the land without the approval of the lessor. " * 3,
         "x"]


@pytest.fixture(scope="module")
def fused(tmp_path_factory: pytest.TempPathFactory) -> tuple[onnx.ModelProto, object, list]:
    path = resolve_encoder_path(None)
    encoder = load_encoder(None, device="cpu")
    out = export_onnx(encoder, path, encoder_fingerprint(path), "onnx",
                      tmp_path_factory.mktemp("smoothing-cache"))
    model = onnx.load(str(out / MODEL_FILE))
    names = [i.name for i in model.graph.input]
    return model, encoder, names


def _feeds(encoder, names: list[str], texts: list[str]) -> list[dict[str, np.ndarray]]:
    feeds = []
    for text in texts:
        encoded = encoder.tokenizer([text], truncation=True, return_tensors="pt")
        feeds.append(graph_inputs(names, encoded["input_ids"], encoded["attention_mask"],
                                  encoded.get("token_type_ids")))
    return feeds


def _run(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["last_hidden_state"], feed)[0]


def _spread(ranges: dict[str, np.ndarray]) -> float:
    """The largest ratio of a channel's range to its tensor's median channel range."""
    return max(float(r.max() / np.median(r)) for r in ranges.values())


def test_the_smoothed_graph_computes_the_same_function_in_fp32(fused) -> None:
    model, encoder, names = fused
    calibration = _feeds(encoder, names, calibration_texts())
    ranges = activation_ranges(model, calibration)
    # One range per distinct input of the 24 quantised nodes (6 Attention, 18 MatMul).
    assert len(smoothable_nodes(model)) == 24
    assert all(r.ndim == 1 and (r > 0).all() for r in ranges.values())
    smoothed = smooth(model, ranges, SMOOTHING_ALPHA)
    assert sum(n.op_type == "Mul" for n in smoothed.graph.node) == \
        sum(n.op_type == "Mul" for n in model.graph.node) + 24
    for feed in _feeds(encoder, names, TEXTS):  # texts the ranges were not measured on
        want = _run(model, feed)
        got = _run(smoothed, feed)
        assert got.shape == want.shape
        assert np.abs(got - want).max() < 1e-4 * np.abs(want).max()


def test_smoothing_evens_the_channels_the_quantiser_sees(fused) -> None:
    model, encoder, names = fused
    calibration = _feeds(encoder, names, calibration_texts())
    before = activation_ranges(model, calibration)
    after = activation_ranges(smooth(model, before, SMOOTHING_ALPHA), calibration)
    # The quantised nodes now read x / s, whose largest channel is much nearer the median
    # (the spread per tensor is what sets int8's rounding step): 22.7 -> 8.4 here.
    assert _spread(before) > 10
    assert _spread(after) < _spread(before) / 2
    assert smooth(model, before, 0.0) is not model  # a copy, the input graph untouched
    assert _spread(activation_ranges(model, calibration)) == _spread(before)


def test_bad_arguments_are_refused(fused) -> None:
    model, _, _ = fused
    with pytest.raises(ValueError, match=r"alpha must lie in \[0, 1\]"):
        smooth(model, {}, 1.5)
    with pytest.raises(ValueError, match="at least one feed"):
        activation_ranges(model, [])


def test_the_calibration_texts_are_packaged(tmp_path: Path) -> None:
    texts = calibration_texts()
    assert len(texts) >= 20 and all(texts)
    # Three languages: the backend may serve any of the shipped models.
    assert any("\u3040" <= ch <= "\u30ff" for t in texts for ch in t)
    assert any("ư" in t for t in texts)
