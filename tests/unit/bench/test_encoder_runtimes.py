"""bench.encoder_runtimes: the arithmetic it reports and the MatMuls its partial int8 picks."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import onnx
from onnx import TensorProto, helper

from bench.encoder_runtimes import _ffn_matmuls, cpu_features, transformer_macs


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
