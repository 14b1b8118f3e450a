"""Per-channel activation smoothing of an ONNX encoder graph before dynamic int8 (SmoothQuant).

Dynamic int8 (``onnxruntime.quantization.quantize_dynamic``) quantises each MatMul's input
per tensor at run time: one scale for every channel. BERT-style encoders carry a few input
channels far larger than the rest (the fine-tuned MiniLM's first feed-forward input: 28.5
against a channel median of 2.0 over the calibration text), so the rounding step those set
drowns the small channels. That, not the saturation of AVX2's multiply-adds, is the int8
error measured here (README, "CPU encoder backends": 7-bit and unsigned weights did not move
it). SmoothQuant (Xiao et al., 2023) moves that difficulty into the weights: for an input
``X`` [tokens, in] and a constant weight ``W`` [in, out], with ``a_j`` the largest ``|X_j|``
seen on calibration text and ``w_j`` the largest ``|W_j.|``,

    s_j = a_j ** alpha / w_j ** (1 - alpha),    X W = (X diag(1/s)) (diag(s) W),

so in fp32 the graph computes the same function (tests/unit/reranker/test_onnx_smoothing.py)
and the int8 graph quantises ``X / s``, whose channels are even.

BERT is post-LayerNorm: a LayerNorm's output is also the residual of the next block, so
``1/s`` cannot be folded into the LayerNorm as SmoothQuant does in pre-LN models. Each
quantised node gets an explicit ``Mul`` by ``1/s`` instead (one elementwise pass over its
input). The nodes are those dynamic quantisation turns into int8 kernels in ONNX Runtime's
fused BERT graph: ``Attention`` (its packed Q/K/V projection) and every ``MatMul`` with a
constant weight.

Written here, not taken from ONNX Runtime: its own SmoothQuant option exists only for static
quantisation and runs through Intel Neural Compressor, a further dependency, and gives a
fixed activation scale per tensor, where dynamic int8 is the variant that measured fastest on
this CPU. The transformation itself is ``onnx`` graph editing and ``numpy``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx

__all__ = ["SMOOTHED_OPS", "activation_ranges", "smooth", "smoothable_nodes"]

#: The operators whose input is smoothed: those dynamic int8 quantises in the fused graph.
SMOOTHED_OPS = ("Attention", "MatMul")
# Bounds on s: a channel that is all but silent on the calibration text must not blow its
# weights up (nor an outlier shrink them) by more than this.
_SCALE_BOUNDS = (1e-2, 1e2)
_FLOOR = 1e-5


def smoothable_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The nodes of ``model`` in :data:`SMOOTHED_OPS` whose weight (input 1) is a constant."""
    constants = {init.name for init in model.graph.initializer}
    return [node for node in model.graph.node if _smoothable(node, constants)]


def _smoothable(node: onnx.NodeProto, constants: set[str]) -> bool:
    return (node.op_type in SMOOTHED_OPS and len(node.input) > 1
            and node.input[1] in constants)


def activation_ranges(model: onnx.ModelProto, feeds: Iterable[Mapping[str, np.ndarray]]
                      ) -> dict[str, np.ndarray]:
    """Per channel, the largest ``|x|`` of each smoothable node's input over ``feeds``.

    Args:
        model: the fp32 graph (not modified: a copy gets the inputs as extra outputs).
        feeds: the graph's inputs, one mapping per run (e.g. [1, tokens] int64 arrays of one
            calibration text each: no padding enters the ranges).

    Returns:
        ``{input tensor name: [channels] float32}``; a tensor several nodes read is measured
        once.
    """
    import onnx
    import onnxruntime as ort

    names = sorted({node.input[0] for node in smoothable_nodes(model)})
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in names:
        probe.graph.output.append(
            onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    ranges: dict[str, np.ndarray] = {}
    for feed in feeds:
        for name, value in zip(names, session.run(names, dict(feed)), strict=True):
            peak = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
            ranges[name] = peak if name not in ranges else np.maximum(ranges[name], peak)
    if not ranges:
        raise ValueError("no calibration input: activation ranges need at least one feed")
    return ranges


def smooth(model: onnx.ModelProto, ranges: Mapping[str, np.ndarray], alpha: float
           ) -> onnx.ModelProto:
    """A copy of ``model`` whose smoothable nodes read ``x / s`` and hold ``diag(s) W``.

    Args:
        model: the fp32 graph.
        ranges: :func:`activation_ranges` of it; a node whose input is not in it is left as
            it is.
        alpha: how much of each channel's range moves into the weights (0: none, 1: all).

    Returns:
        The smoothed graph: the same function in fp32, one ``Mul`` more per smoothed node,
        the replaced weights dropped.
    """
    import onnx
    from onnx import numpy_helper

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], not {alpha}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    weights = {init.name: init for init in graph.initializer}
    constants = set(weights)
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if _smoothable(node, constants) and node.input[0] in ranges:
            weight = numpy_helper.to_array(weights[node.input[1]]).astype(np.float32)
            act = np.maximum(np.asarray(ranges[node.input[0]], dtype=np.float64), _FLOOR)
            wmax = np.maximum(np.abs(weight).max(axis=1).astype(np.float64), _FLOOR)
            scale = np.clip(act ** alpha / wmax ** (1.0 - alpha), *_SCALE_BOUNDS)
            scale = scale.astype(np.float32)
            smoothed_weight = f"{node.name}/smoothed_weight"
            inverse = f"{node.name}/inverse_scale"
            smoothed_input = f"{node.name}/smoothed_input"
            graph.initializer.extend([
                numpy_helper.from_array(weight * scale[:, None], smoothed_weight),
                numpy_helper.from_array((1.0 / scale).astype(np.float32), inverse)])
            nodes.append(onnx.helper.make_node("Mul", [node.input[0], inverse],
                                               [smoothed_input], name=f"{node.name}/smooth"))
            node.input[0], node.input[1] = smoothed_input, smoothed_weight
        copied = onnx.NodeProto()
        copied.CopyFrom(node)  # owned by the list, not by the field cleared below
        nodes.append(copied)
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return out
