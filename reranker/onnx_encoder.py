"""The encoder served through ONNX Runtime on CPU: exported once from the torch weights.

A CPU worker spends most of a rerank encoding the query (README, "Speed of a rerank"), so the
encoder's runtime is the floor. This module exports a loaded SentenceTransformer's transformer
body to ONNX, optionally int8-quantised, and swaps it into the same SentenceTransformer: the
tokeniser, the pooling, the normalisation, the query prompt and the truncation stay the
SentenceTransformer's own, so only the transformer's arithmetic changes.

Variants (:data:`ENCODER_BACKENDS`; ``LEXRERANK_ENCODER_BACKEND``):

- ``torch``: the reference (fp32 on CPU, fp16 on CUDA); nothing exported.
- ``onnx``: fp32, graph fused by ONNX Runtime's transformer optimizer (attention, GELU,
  layer norm).
- ``onnx-int8``: the fused graph with dynamic int8 quantisation of the weights (per channel).
- ``onnx-int8-smooth``: ``onnx-int8`` after SmoothQuant's per-channel smoothing of every
  quantised input (:mod:`reranker.onnx_smoothing`), its ranges measured on the packaged
  calibration texts (``onnx_calibration.txt``: invented statute-like sentences and questions
  in English, Japanese and Vietnamese, never COLIEE's or ALQAC's).

``auto``, the setting's default, is not a variant: :func:`reranker.checkpoint.load_reranker`
maps it to one per checkpoint language (:func:`reranker.model_names.backend_for`).

Why not sentence-transformers' own ``backend="onnx"``: it goes through ``optimum-onnx``, whose
release pins transformers < 4.58, while this project runs transformers 5 (pip downgrades
sentence-transformers to 5.7 and transformers to 4.57 to install it). The export is
``torch.onnx.export``, the fusion and quantisation are ONNX Runtime's own tools, and the
runtime is ``onnxruntime.InferenceSession``: only the glue is written here.

Export happens on first use into ``<cache_dir>/encoders/onnx/`` (written to a temporary
directory and renamed, so a crash never leaves half a model) and never downloads anything.
The variant is part of the model version: :func:`served_fingerprint` mixes :func:`variant_id`
into the encoder fingerprint every model version is derived from, so article vectors and
queries are always computed by the same variant, and
:func:`reranker.checkpoint.served_model_version` tells a process that loads no model which
version a checkpoint has on a backend.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import tempfile
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from reranker.errors import LexrerankError
from reranker.model_names import ENCODER_BACKENDS

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["OnnxTransformerBody", "calibration_texts", "export_graph", "export_onnx",
           "graph_inputs", "serve_with_backend", "served_fingerprint", "to_onnx_backend",
           "transformer_config", "variant_id"]

MODEL_FILE = "model.onnx"
EXPORT_RECORD = "export.json"
# Bumped when the export recipe changes: a new recipe is a new graph, hence a new version.
EXPORT_RECIPE = 1
_OPSET = 17
SMOOTHED_INT8 = "onnx-int8-smooth"
#: SmoothQuant's migration strength for ``onnx-int8-smooth`` (README, "CPU encoder backends":
#: chosen by the query embeddings' cosine to torch fp32 on COLIEE's earliest training years).
SMOOTHING_ALPHA = 0.7
CALIBRATION_FILE = Path(__file__).with_name("onnx_calibration.txt")

_export_lock = threading.Lock()


def _check_backend(backend: str) -> None:
    if backend not in ENCODER_BACKENDS:
        raise LexrerankError(f"unknown encoder backend {backend!r}: use one of "
                             f"{', '.join(ENCODER_BACKENDS)} (LEXRERANK_ENCODER_BACKEND)")


def _transformer_dir(encoder_dir: Path) -> Path:
    """The directory of the SentenceTransformer's first (transformer) module."""
    modules = encoder_dir / "modules.json"
    if modules.is_file():
        first = json.loads(modules.read_text(encoding="utf-8"))[0]
        return encoder_dir / first.get("path", "")
    return encoder_dir


def export_graph(encoder: SentenceTransformer, encoder_dir: Path, out: Path) -> list[str]:
    """torch -> ONNX of the transformer body, unfused (eager attention, so ONNX Runtime can
    fuse it; ``bench encoder-runtimes`` gives it to OpenVINO as it is).

    Returns the graph's input names. Shapes: inputs [batch, tokens] int64, output
    ``last_hidden_state`` [batch, tokens, hidden] float32.
    """
    from transformers import AutoModel

    # A local directory read with local_files_only: nothing is fetched from a hub.
    body = AutoModel.from_pretrained(  # nosec B615 - a local directory, never downloaded
        str(_transformer_dir(encoder_dir)), attn_implementation="eager",
        local_files_only=True)
    body.eval()
    sample = encoder.tokenizer(["a short sample sentence"], return_tensors="pt")
    accepted = set(inspect.signature(body.forward).parameters)
    names: list[str] = [n for n in ("input_ids", "attention_mask", "token_type_ids")
                        if n in sample and n in accepted]

    class _LastHiddenState(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.model(**dict(zip(names, inputs, strict=True))).last_hidden_state

    axes = {n: {0: "batch", 1: "tokens"} for n in [*names, "last_hidden_state"]}
    # The tracer warns that the mask's padding test and the position index become constants
    # of the graph; both hold for every batch and length (tests/unit/reranker/
    # test_onnx_encoder.py compares padded batches, a truncated text and an empty one).
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index", category=UserWarning)
        torch.onnx.export(_LastHiddenState(body), tuple(sample[n] for n in names), str(out),
                          input_names=names, output_names=["last_hidden_state"],
                          dynamic_axes=axes, opset_version=_OPSET, dynamo=False)
    return names


def _fuse(path: Path, config: Any) -> None:
    """ONNX Runtime's transformer optimizer in place (attention, GELU, layer norm fusions)."""
    from onnxruntime.transformers.optimizer import optimize_model

    fused = optimize_model(str(path), model_type="bert",
                           num_heads=int(config.num_attention_heads),
                           hidden_size=int(config.hidden_size))
    fused.save_model_to_file(str(path))


def _quantize(src: Path, dst: Path) -> None:
    """Dynamic int8 quantisation of the weights, per output channel (activations stay fp32)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The fused operators are in Microsoft's domain, which shape inference does not type:
    # DefaultTensorType tells the quantiser that untyped tensors are float.
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


def calibration_texts() -> list[str]:
    """The packaged calibration texts of ``onnx-int8-smooth``, one per line."""
    lines = CALIBRATION_FILE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip()]


def _smoothing_digest() -> str:
    """What the smoothed graph depends on besides the weights: alpha and the texts."""
    return hashlib.sha256(f"{SMOOTHING_ALPHA}|".encode() + CALIBRATION_FILE.read_bytes()
                          ).hexdigest()[:8]


def _smooth(path: Path, encoder: SentenceTransformer, names: list[str]) -> None:
    """SmoothQuant in place on the fused fp32 graph at ``path``, its activation ranges
    measured on :func:`calibration_texts` (each text alone, truncated as the encoder does)."""
    import onnx

    from reranker.onnx_smoothing import activation_ranges, smooth

    graph = onnx.load(str(path))

    def feeds() -> Any:
        for text in calibration_texts():
            encoded = encoder.tokenizer([text], truncation=True,
                                        max_length=encoder.max_seq_length, return_tensors="pt")
            yield graph_inputs(names, encoded["input_ids"], encoded["attention_mask"],
                               encoded.get("token_type_ids"))

    onnx.save(smooth(graph, activation_ranges(graph, feeds()), SMOOTHING_ALPHA), str(path))


def transformer_config(encoder: SentenceTransformer) -> Any:
    """The Hugging Face config of the encoder's transformer (heads, hidden size)."""
    return getattr(encoder[0].model, "config")  # noqa: B009 (typed as Tensor | Module)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def export_onnx(encoder: SentenceTransformer, encoder_dir: str | os.PathLike,
                fingerprint: str, backend: str, cache_dir: str | os.PathLike | None) -> Path:
    """The exported directory of ``encoder`` in ``backend`` (exported now unless cached).

    Args:
        encoder: the loaded SentenceTransformer (its tokenizer makes the sample input).
        encoder_dir: the directory it was loaded from.
        fingerprint: :func:`reranker.encoder.encoder_fingerprint` of that directory; the cache
            key, so a changed encoder is exported again.
        backend: ``onnx``, ``onnx-int8`` or ``onnx-int8-smooth``.
        cache_dir: the cache root (``<cache_dir>/encoders/onnx/<fingerprint>-<variant>``);
            None is refused (:func:`reranker.encoder.encoder_cache_dir`).

    Returns:
        The directory holding ``model.onnx`` and ``export.json`` (the recipe, the versions of
        the tools, the graph's sha256 and its input names).
    """
    _check_backend(backend)
    if backend == "torch":
        raise LexrerankError("the torch backend is not exported")
    from reranker.encoder import encoder_cache_dir

    root = encoder_cache_dir(cache_dir, f"the {backend} export of an encoder") / "onnx"
    out = root / f"{fingerprint}-{variant_id(backend).replace(':', '-')}"
    with _export_lock:
        if (out / EXPORT_RECORD).is_file():
            return out
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=root))
        try:
            import onnxruntime

            fp32 = tmp / "fp32.onnx"
            names = export_graph(encoder, Path(encoder_dir), fp32)
            _fuse(fp32, transformer_config(encoder))
            if backend == SMOOTHED_INT8:
                _smooth(fp32, encoder, names)
            if backend in ("onnx-int8", SMOOTHED_INT8):
                _quantize(fp32, tmp / MODEL_FILE)
                fp32.unlink()
            else:
                fp32.rename(tmp / MODEL_FILE)
            record = {"backend": backend, "recipe": EXPORT_RECIPE, "encoder": fingerprint,
                      "inputs": names, "sha256": _sha256(tmp / MODEL_FILE),
                      "torch": torch.__version__, "onnxruntime": onnxruntime.__version__}
            if backend == SMOOTHED_INT8:
                record["smoothing"] = {"alpha": SMOOTHING_ALPHA,
                                       "calibration_texts": len(calibration_texts()),
                                       "digest": _smoothing_digest()}
            (tmp / EXPORT_RECORD).write_text(json.dumps(record, indent=2), encoding="utf-8")
            try:
                tmp.rename(out)
            except OSError:
                # Another process (a worker's sibling) finished the same export first: the
                # recipe is deterministic, so its directory is kept and ours dropped; it is
                # never replaced under a process that may be reading it.
                if not (out / EXPORT_RECORD).is_file():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return out


def variant_id(backend: str) -> str:
    """``<backend>:r<recipe>:ort<major.minor>``, what model versions mix in for ``backend``
    (``onnx-int8-smooth`` adds ``:sq<digest>`` of its alpha and calibration texts).

    It names the recipe and the ONNX Runtime release that exports and runs the graph, not the
    graph's bytes (``export.json`` keeps their sha256): like the torch fingerprint, which
    names the weights and not the torch release, it can be computed without exporting, so a
    reindex job that never loads a model knows which version its workers will write.
    """
    import onnxruntime

    _check_backend(backend)
    release = ".".join(onnxruntime.__version__.split(".")[:2])
    smoothing = f":sq{_smoothing_digest()}" if backend == SMOOTHED_INT8 else ""
    return f"{backend}:r{EXPORT_RECIPE}:ort{release}{smoothing}"


def graph_inputs(names: list[str], input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 token_type_ids: torch.Tensor | None) -> dict[str, np.ndarray]:
    """The feeds of an exported graph whose inputs are ``names``: contiguous int64 arrays
    [batch, tokens]; token types default to zeros (a tokenizer that gives none)."""
    given = {"input_ids": input_ids, "attention_mask": attention_mask,
             "token_type_ids": (token_type_ids if token_type_ids is not None
                                else torch.zeros_like(input_ids))}
    return {n: np.ascontiguousarray(given[n].cpu().numpy(), dtype=np.int64) for n in names}


class OnnxTransformerBody(torch.nn.Module):
    """Stands in for the transformer inside a SentenceTransformer's first module.

    ``forward(input_ids, attention_mask, token_type_ids)`` ([batch, tokens] int64 tensors)
    returns ``{"last_hidden_state": [batch, tokens, hidden] float32}`` computed by an ONNX
    Runtime session on CPU; the Pooling and Normalize modules after it are unchanged.
    """

    def __init__(self, export_dir: str | os.PathLike, config: Any,
                 threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime as ort

        record = json.loads((Path(export_dir) / EXPORT_RECORD).read_text(encoding="utf-8"))
        self.variant = variant_id(record["backend"])

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(Path(export_dir) / MODEL_FILE), options,
                                            providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.config = config  # read by sentence-transformers (hidden size, output flags)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None, **_: Any) -> dict[str, torch.Tensor]:
        feeds = graph_inputs(self.input_names, input_ids, attention_mask, token_type_ids)
        (hidden,) = self.session.run(["last_hidden_state"], feeds)
        return {"last_hidden_state": torch.from_numpy(hidden)}


def to_onnx_backend(encoder: SentenceTransformer, encoder_dir: str | os.PathLike,
                    fingerprint: str, backend: str, cache_dir: str | os.PathLike | None) -> str:
    """Swap ``encoder``'s transformer for its ONNX export, in place, on CPU.

    Returns the :func:`variant_id`. The torch weights are released. The encoder must be on
    CPU: ONNX Runtime's CPU provider is the one installed (:func:`reranker.checkpoint.
    load_reranker` loads on CPU for these backends). An encoder already swapped (shared by the
    members of an ensemble) is left as it is.
    """
    module = encoder[0]
    if isinstance(module.model, OnnxTransformerBody):
        if not module.model.variant.startswith(f"{backend}:"):
            raise LexrerankError(f"this encoder already runs as {module.model.variant}, not "
                                 f"{backend}: load the model again for another backend")
        return module.model.variant
    if encoder.device.type != "cpu":
        raise LexrerankError(f"encoder backend {backend!r} runs on CPU, and this encoder is on "
                             f"{encoder.device}: use LEXRERANK_ENCODER_BACKEND=torch on GPU "
                             "workers (and on the indexers that embed for them)")
    export_dir = export_onnx(encoder, encoder_dir, fingerprint, backend, cache_dir)
    body = OnnxTransformerBody(export_dir, transformer_config(encoder))
    module.model = body
    return body.variant


def served_fingerprint(fingerprint: str, backend: str) -> str:
    """The fingerprint of the encoder ``fingerprint`` served on ``backend``: every model
    version derived from it (Paraformer, dense, an ensemble) then names the variant too.
    ``torch`` leaves it unchanged (the stored vectors of the reference stay valid)."""
    if backend == "torch":
        return fingerprint
    return hashlib.sha256(f"{fingerprint}|{variant_id(backend)}".encode()).hexdigest()[:16]


def serve_with_backend(model: Any, backend: str, cache_dir: str | os.PathLike | None) -> Any:
    """``model`` (a reranker or an ensemble of them) with its encoders on ``backend``.

    Each member that holds a SentenceTransformer (Paraformer, dense) gets the exported
    encoder, its ``encoder_fingerprint`` replaced by :func:`served_fingerprint` and
    ``encoder_backend`` set to the variant; members without an encoder (Attentive CNN) are
    unchanged. ``torch`` returns ``model`` as it is. Call it after the checkpoint's own
    fingerprint checks (:func:`reranker.checkpoint.load_reranker` does).
    """
    _check_backend(backend)
    if backend == "torch":
        return model
    from reranker.encoder import encoder_source

    members = list(getattr(model, "members", {}).values()) or [model]
    for member in members:
        encoder = getattr(member, "encoder", None)
        if encoder is None or not hasattr(encoder, "encode_query"):
            continue
        source = encoder_source(encoder) or member.encoder_name
        variant = to_onnx_backend(encoder, source, member.encoder_fingerprint, backend,
                                  cache_dir)
        member.encoder_fingerprint = served_fingerprint(member.encoder_fingerprint, backend)
        member.encoder_backend = variant
    return model
