"""`lexrerank bench encoder-runtimes`: every CPU runtime tried for the query encoder, side by side.

`bench rerank` measures the served backends (``LEXRERANK_ENCODER_BACKEND``). This suite also
measures the candidates that were tried to bring the query encode below 0.4x torch fp32 at
one thread (issue 17) and not served, so the choice can be re-made on other hardware:

- ``torch``: the reference, fp32;
- ``onnx``, ``onnx-int8``, ``onnx-int8-smooth``: the served ONNX Runtime variants
  (:mod:`reranker.onnx_encoder`; the last is int8 after SmoothQuant's smoothing);
- ``onnx-int8-ffn``: dynamic int8 of the feed-forward MatMuls only (two thirds of the
  arithmetic); attention and its output projection stay fp32;
- ``onnx-int8-7bit``, ``onnx-int8-u8u8``: dynamic int8 of every MatMul as ``onnx-int8``, with
  the two remedies ONNX Runtime documents for the saturation of AVX2's ``VPMADDUBSW``
  (u8 x s8 pairs summed into int16) on CPUs without VNNI: weights in 7 bits
  (``reduce_range``), or unsigned weights (U8U8 kernels, which do not saturate);
- ``onnx-int8-weights``: int8 weights only (``MatMulNBits``, blocks of 32, accuracy level 4:
  activations quantised per block of 32 values at run time, so per token, not per batch);
- ``openvino``, ``openvino-int8``: OpenVINO fp32 of the unfused export, and NNCF's
  post-training int8 (transformer preset: SmoothQuant, fast bias correction) calibrated on
  the index's article texts, never on queries. Skipped, with the reason, without
  ``pip install -e '.[runtimes]'``; so is ``onnx-int8-weights`` (it needs ``onnx-ir``).

Each candidate is a copy of the same SentenceTransformer with its transformer swapped, so the
tokeniser, pooling and prompt are the same; all run at one thread and are interleaved query by
query, so they see the same machine. Per candidate: ``encode_ms_p50``/``p95`` (one query per
call, ``encode_query``), ``over_torch_p50``; ``cosine_to_torch_min``/``mean`` of the query
embeddings; ``batch_dependence`` (largest absolute difference between a query encoded alone
and inside a batch of 16: dynamic quantisation scales activations per batch); and
``gmac_per_s``, the transformer's multiply-accumulates per second of encode (from the config
and each query's tokens), which says how near a candidate is to the core's arithmetic peak.
``cpu`` names the processor and whether it has AVX2, AVX-512, VNNI, bf16 and AMX.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.quality_data import read_corpus
from bench.services import training_queries
from indexer.article_vectors import index_language
from lexrerank.config import get_settings
from lexrerank.evaluation import percentile
from lexrerank.opensearch_client import opensearch_client
from reranker.checkpoint import load_reranker
from reranker.dense import passage
from reranker.encoder import encoder_source
from reranker.onnx_encoder import (
    EXPORT_RECORD,
    MODEL_FILE,
    OnnxTransformerBody,
    export_graph,
    export_onnx,
    graph_inputs,
    transformer_config,
)
from reranker.registry import checkpoint_path

CANDIDATES = ("torch", "onnx", "onnx-int8", "onnx-int8-smooth", "onnx-int8-ffn", "onnx-int8-7bit",
              "onnx-int8-u8u8", "onnx-int8-weights", "openvino", "openvino-int8")
BATCH = 16
CALIBRATION_TEXTS = 300


class OpenVinoTransformerBody(torch.nn.Module):
    """A compiled OpenVINO model in place of a SentenceTransformer's transformer.

    ``forward(input_ids, attention_mask, token_type_ids)`` ([batch, tokens] int64) returns
    ``{"last_hidden_state": [batch, tokens, hidden] float32}``, as
    :class:`reranker.onnx_encoder.OnnxTransformerBody` does.
    """

    def __init__(self, model: Any, config: Any) -> None:
        super().__init__()
        import openvino

        self.compiled = openvino.Core().compile_model(
            model, "CPU", {"INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1,
                           "PERFORMANCE_HINT": "LATENCY"})
        self.request = self.compiled.create_infer_request()
        self.input_names = [i.get_any_name() for i in self.compiled.inputs]
        self.config = config

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None, **_: Any) -> dict[str, torch.Tensor]:
        out = self.request.infer(graph_inputs(self.input_names, input_ids, attention_mask,
                                              token_type_ids))
        return {"last_hidden_state": torch.from_numpy(np.array(out[self.compiled.outputs[0]]))}


def cpu_features(cpuinfo: str | None = None) -> dict[str, Any]:
    """The CPU model and the instruction sets int8 and bf16 kernels depend on (Linux
    ``/proc/cpuinfo``; empty elsewhere): the same candidates rank differently where these are
    present."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8")
        except OSError:
            return {}
    first = cpuinfo.split("\n\n", 1)[0]  # the first processor's block
    fields = {k.strip(): v.strip()
              for k, v in (line.split(":", 1) for line in first.splitlines() if ":" in line)}
    flags = set(fields.get("flags", "").split())
    return {"model": fields.get("model name", ""), "avx2": "avx2" in flags,
            "avx512": "avx512f" in flags,
            "vnni": bool(flags & {"avx512_vnni", "avx_vnni"}),
            "bf16": bool(flags & {"avx512_bf16", "amx_bf16"}), "amx": "amx_tile" in flags}


def transformer_macs(config: Any, tokens: int) -> int:
    """Multiply-accumulates of one BERT-style forward over ``tokens`` tokens: per layer and
    token, Q/K/V and the output projection (4 h^2), the feed-forward pair (2 h i) and the
    attention scores and context (2 T h)."""
    h, i = int(config.hidden_size), int(config.intermediate_size)
    return int(config.num_hidden_layers) * tokens * (4 * h * h + 2 * h * i + 2 * tokens * h)


def _onnx_dir(root: Path, name: str, write: Callable[[Path], None]) -> Path:
    """A directory :class:`OnnxTransformerBody` loads, holding the graph ``write`` makes."""
    out = root / name
    out.mkdir()
    write(out / MODEL_FILE)
    # The body reads its variant name from the record; these graphs are measured, never
    # served, so they borrow the served int8 name.
    (out / EXPORT_RECORD).write_text(json.dumps({"backend": "onnx-int8", "candidate": name}),
                                     encoding="utf-8")
    return out


def _ffn_matmuls(graph: Path) -> list[str]:
    import onnx

    nodes = onnx.load(str(graph), load_external_data=False).graph.node
    # The exporter names them after the torch modules: layer.N/intermediate/dense (up) and
    # layer.N/output/dense (down); layer.N/attention/output/dense is attention's projection.
    return [n.name for n in nodes if n.op_type == "MatMul" and "attention" not in n.name
            and ("/intermediate/" in n.name or "/output/" in n.name)]


def _dynamic_int8(*, ffn_only: bool = False, reduce_range: bool = False,
                  unsigned_weights: bool = False) -> Callable[[Path], Callable[[Path], None]]:
    """A writer of the fused graph's dynamic int8 quantisation (per channel), with options."""
    def quantize(fused: Path) -> Callable[[Path], None]:
        def write(dst: Path) -> None:
            import onnx
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(
                str(fused), str(dst), per_channel=True, reduce_range=reduce_range,
                weight_type=QuantType.QUInt8 if unsigned_weights else QuantType.QInt8,
                nodes_to_quantize=_ffn_matmuls(fused) if ffn_only else None,
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        return write
    return quantize


def _quantize_weights(fused: Path) -> Callable[[Path], None]:
    def write(dst: Path) -> None:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(str(fused), bits=8, block_size=32, is_symmetric=True,
                                         accuracy_level=4)
        quantizer.process()
        quantizer.model.save_model_to_file(str(dst))
    return write


def _calibrated_int8(raw: Path, tokenizer: Any, texts: Sequence[str], max_length: int) -> Any:
    import nncf
    import openvino

    def feed(text: str) -> dict[str, np.ndarray]:
        encoded = tokenizer([text], truncation=True, max_length=max_length, return_tensors="np")
        return {k: encoded[k].astype(np.int64)
                for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded}

    # NNCF draws its progress bars on stdout, where --json prints the result.
    with contextlib.redirect_stdout(sys.stderr):
        return nncf.quantize(openvino.Core().read_model(str(raw)),
                             nncf.Dataset(list(texts), feed),
                             model_type=nncf.ModelType.TRANSFORMER, subset_size=len(texts))


def _swap(encoder: Any, build: Callable[[], torch.nn.Module]) -> Any:
    encoder[0].model = build()
    return encoder


def run(queries: int = 150, model: str = "default", index: str | None = None,
        candidates: Sequence[str] = CANDIDATES) -> dict[str, Any]:
    """Figures per candidate (see the module doc); a candidate that cannot be built here
    (its package missing) is under ``skipped`` with the reason."""
    torch.set_num_threads(1)
    settings = get_settings()
    client = opensearch_client(settings)
    index = index or settings.index
    language = index_language(client, index)
    path = checkpoint_path(model, language, settings.model_dir)

    def fresh_encoder() -> Any:
        loaded = load_reranker(path, device="cpu", cache_dir=settings.cache_dir)
        members = list(getattr(loaded, "members", {model: loaded}).values())
        return next(m for m in members if hasattr(getattr(m, "encoder", None), "encode_query"))

    reference = fresh_encoder()
    source = Path(encoder_source(reference.encoder) or reference.encoder_name)
    config = transformer_config(reference.encoder)
    texts = [q.text for q in training_queries(queries, language)]
    encoders: dict[str, Any] = {"torch": reference.encoder}
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="lexrerank-runtimes-") as tmp:
        root = Path(tmp)

        # Each graph is made only if a chosen candidate needs it (the served exports are
        # cached by export_onnx itself).
        def served(backend: str) -> Path:
            return export_onnx(reference.encoder, source, reference.encoder_fingerprint,
                               backend, settings.cache_dir)

        @functools.cache
        def unfused() -> Path:
            export_graph(reference.encoder, source, root / "unfused.onnx")
            return root / "unfused.onnx"

        def calibrated() -> Any:
            corpus = read_corpus(client, index)
            texts = [passage(a.caption, a.sentences)
                     for a in list(corpus.values())[:CALIBRATION_TEXTS]]
            return _calibrated_int8(unfused(), reference.encoder.tokenizer, texts,
                                    reference.encoder.max_seq_length)

        def quantized(name: str, quantize: Callable[[Path], Callable[[Path], None]]) -> Path:
            return _onnx_dir(root, name, quantize(served("onnx") / MODEL_FILE))

        builders: dict[str, Callable[[], torch.nn.Module]] = {
            "onnx": lambda: OnnxTransformerBody(served("onnx"), config, threads=1),
            "onnx-int8": lambda: OnnxTransformerBody(served("onnx-int8"), config, threads=1),
            "onnx-int8-smooth": lambda: OnnxTransformerBody(served("onnx-int8-smooth"), config,
                                                            threads=1),
            "onnx-int8-ffn": lambda: OnnxTransformerBody(
                quantized("int8-ffn", _dynamic_int8(ffn_only=True)), config, threads=1),
            "onnx-int8-7bit": lambda: OnnxTransformerBody(
                quantized("int8-7bit", _dynamic_int8(reduce_range=True)), config, threads=1),
            "onnx-int8-u8u8": lambda: OnnxTransformerBody(
                quantized("int8-u8u8", _dynamic_int8(unsigned_weights=True)), config,
                threads=1),
            "onnx-int8-weights": lambda: OnnxTransformerBody(
                quantized("int8-weights", _quantize_weights), config, threads=1),
            "openvino": lambda: OpenVinoTransformerBody(str(unfused()), config),
            "openvino-int8": lambda: OpenVinoTransformerBody(calibrated(), config),
        }
        for name in candidates:
            if name == "torch":
                continue
            try:
                encoders[name] = _swap(fresh_encoder().encoder, builders[name])
            except ImportError as exc:  # an optional runtime not installed
                skipped[name] = f"{exc} (pip install -e '.[runtimes]')"
        result = _measure(encoders, texts, config)
    return {"suite": "encoder-runtimes", "model": model, "language": language,
            "queries": len(texts), "threads": 1, "batch": BATCH, "cpu": cpu_features(),
            "candidates": result, "skipped": skipped}


def _measure(encoders: dict[str, Any], texts: Sequence[str], config: Any
             ) -> dict[str, dict[str, float]]:
    reference = encoders["torch"]
    prompt = reference.prompts.get("query", "")
    tokens = [len(reference.tokenizer(prompt + t, truncation=True,
                                      max_length=reference.max_seq_length)["input_ids"])
              for t in texts]
    for text in texts[:5]:  # warm-up: allocators, lazy initialisation
        for encoder in encoders.values():
            encoder.encode_query([text])
    times: dict[str, list[float]] = {n: [] for n in encoders}
    vectors: dict[str, list[np.ndarray]] = {n: [] for n in encoders}
    for text in texts:
        for name, encoder in encoders.items():
            start = time.perf_counter()
            vector = encoder.encode_query([text], convert_to_numpy=True)[0]
            times[name].append((time.perf_counter() - start) * 1000)
            vectors[name].append(vector)
    torch_p50 = percentile(times["torch"], 50)
    macs = sum(transformer_macs(config, n) for n in tokens)  # of the whole query set
    want = np.stack(vectors["torch"])
    out = {}
    for name, encoder in encoders.items():
        got = np.stack(vectors[name])
        cosine = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
        batched = encoder.encode_query(list(texts[:BATCH]), batch_size=BATCH,
                                       convert_to_numpy=True)
        out[name] = {
            "encode_ms_p50": round(percentile(times[name], 50), 3),
            "encode_ms_p95": round(percentile(times[name], 95), 3),
            "over_torch_p50": round(percentile(times[name], 50) / torch_p50, 3),
            "cosine_to_torch_min": round(float(cosine.min()), 6),
            "cosine_to_torch_mean": round(float(cosine.mean()), 6),
            "batch_dependence": float(f"{np.abs(batched - got[:BATCH]).max():.3g}"),
            "gmac_per_s": round(macs / (sum(times[name]) / 1000) / 1e9, 1),
        }
    return out
