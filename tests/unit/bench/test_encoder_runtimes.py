"""bench.encoder_runtimes: the arithmetic it reports and the int8 graphs it writes."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bench.encoder_runtimes import _dynamic_int8, _ffn_matmuls, cpu_features, transformer_macs


def test_macs_count_projections_feed_forward_and_attention_per_token() -> None:
    config = SimpleNamespace(hidden_size=4, intermediate_size=8, num_hidden_layers=2)
    # per layer and token: 4*16 (Q, K, V, output) + 2*4*8 (up, down) + 2*3*4 (scores, context)
    assert transformer_macs(config, 3) == 2 * 3 * (64 + 64 + 24)
    minilm = SimpleNamespace(hidden_size=384, intermediate_size=1536, num_hidden_layers=6)
    # The feed-forward pair is about two thirds of a short query's arithmetic.
    ffn = 6 * 32 * 2 * 384 * 1536
    assert 0.65 < ffn / transformer_macs(minilm, 32) < 0.66


def test_only_the_feed_forward_matmuls_are_picked(tmp_path: Path) -> None:
    names = ["/model/encoder/layer.0/attention/output/dense/MatMul",
             "/model/encoder/layer.0/intermediate/dense/MatMul",
             "/model/encoder/layer.0/output/dense/MatMul",
             "/model/encoder/layer.1/attention/self/query/MatMul"]
    nodes = [helper.make_node("MatMul", ["x", "w"], [f"y{i}"], name=n)
             for i, n in enumerate(names)]
    nodes.append(helper.make_node("Add", ["x", "x"], ["z"],
                                  name="/model/encoder/layer.0/output/Add"))
    tensor = helper.make_tensor_value_info
    graph = helper.make_graph(nodes, "g", [tensor("x", TensorProto.FLOAT, [1, 2]),
                                           tensor("w", TensorProto.FLOAT, [2, 2])],
                              [tensor(f"y{i}", TensorProto.FLOAT, None) for i in range(4)])
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph), str(path))
    assert _ffn_matmuls(path) == names[1:3]


def test_cpu_features_name_the_instruction_sets_int8_depends_on() -> None:
    cpuinfo = ("processor\t: 0\nmodel name\t: AMD EPYC\n"
               "flags\t\t: fpu sse avx avx2 fma f16c\n")
    assert cpu_features(cpuinfo) == {"model": "AMD EPYC", "avx2": True, "avx512": False,
                                     "vnni": False, "bf16": False, "amx": False}
    sapphire = "model name : Xeon\nflags : avx2 avx512f avx512_vnni avx512_bf16 amx_tile\n"
    assert cpu_features(sapphire) == {"model": "Xeon", "avx2": True, "avx512": True,
                                      "vnni": True, "bf16": True, "amx": True}


def _two_matmuls(path: Path) -> None:
    """x [1, 8] -> feed-forward up (8 x 8) -> attention output projection (8 x 8)."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(size=(8, 8)).astype(np.float32), name)
               for name in ("w_up", "w_attn")]
    nodes = [helper.make_node("MatMul", ["x", "w_up"], ["h"],
                              name="/model/encoder/layer.0/intermediate/dense/MatMul"),
             helper.make_node("MatMul", ["h", "w_attn"], ["y"],
                              name="/model/encoder/layer.0/attention/output/dense/MatMul")]
    tensor = helper.make_tensor_value_info
    graph = helper.make_graph(nodes, "g", [tensor("x", TensorProto.FLOAT, [1, 8])],
                              [tensor("y", TensorProto.FLOAT, [1, 8])], initializer=weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _quantized_weights(path: Path) -> dict[str, np.ndarray]:
    model = onnx.load(str(path))
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer
            if t.name.endswith("_quantized")}


def test_the_int8_options_reach_the_quantiser(tmp_path: Path) -> None:
    fp32 = tmp_path / "fp32.onnx"
    _two_matmuls(fp32)

    def written(name: str, **options: bool) -> dict[str, np.ndarray]:
        _dynamic_int8(**options)(fp32)(tmp_path / name)
        return _quantized_weights(tmp_path / name)

    signed = written("signed.onnx")
    assert len(signed) == 2 and all(w.dtype == np.int8 for w in signed.values())
    assert max(int(np.abs(w).max()) for w in signed.values()) > 64  # the full 8 bits
    # reduce_range: 7-bit weights, so a u8 x s8 pair sum cannot saturate int16
    assert all(int(np.abs(w).max()) <= 64 for w in written("7bit.onnx",
                                                           reduce_range=True).values())
    assert all(w.dtype == np.uint8 for w in written("u8u8.onnx",
                                                    unsigned_weights=True).values())
    ffn = written("ffn.onnx", ffn_only=True)
    assert len(ffn) == 1 and next(iter(ffn)).startswith("w_up")
