"""A fine-tuned encoder shipped as a compact delta over a packaged base encoder.

A fine-tuned encoder in float32 is too large to keep in a repository per language.
Fine-tuning leaves the word embeddings frozen (:mod:`reranker.encoder_training`), so what
changed is the transformer layers. A delta
directory holds exactly those tensors, in float16, and the name and fingerprint of the base
encoder they apply to::

    encoder-delta/
        delta.json          {"format", "base", "base_fingerprint", "max_seq_length",
                             "prompts", "tensors": N, "weights_sha256"}
        delta.safetensors   the changed tensors (state-dict names of the base model), fp16

:func:`materialize` applies a delta to its base once and writes the full SentenceTransformer
directory into a cache (keyed by the delta's sha256), so the encoder fingerprint, and hence
the stored article vectors' model version, is the same on every machine.

:func:`round_to_delta` applies the same float16 rounding in memory, so that what is measured
before shipping is exactly what ships.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from safetensors.torch import load_file, save_file

from reranker.encoder import encoder_fingerprint, load_encoder, resolve_encoder_path
from reranker.errors import LexrerankError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["DELTA_CONFIG", "is_delta", "materialize", "round_to_delta", "save_delta"]

DELTA_CONFIG = "delta.json"
DELTA_WEIGHTS = "delta.safetensors"
BASE_WEIGHTS = "model.safetensors"
FORMAT = 1


def is_delta(path: str | os.PathLike) -> bool:
    return (Path(path) / DELTA_CONFIG).is_file()


def _changed(model: SentenceTransformer, base: SentenceTransformer) -> dict[str, torch.Tensor]:
    """The floating-point tensors of ``model`` that differ from ``base``'s."""
    base_state = base.state_dict()
    changed = {}
    for name, tensor in model.state_dict().items():
        if name not in base_state:
            raise LexrerankError(f"tensor {name} is not in the base encoder: not a delta of it")
        if tensor.is_floating_point() and not torch.equal(tensor.float(),
                                                          base_state[name].float()):
            changed[name] = tensor
    return changed


def round_to_delta(model: SentenceTransformer, base: SentenceTransformer) -> int:
    """Round, in place, every tensor that differs from ``base`` to float16 and back.

    Returns the number of tensors rounded (what :func:`save_delta` would store).
    """
    changed = _changed(model, base)
    with torch.no_grad():
        for tensor in changed.values():
            tensor.copy_(tensor.to(torch.float16).to(tensor.dtype))
    return len(changed)


def save_delta(model: SentenceTransformer, base_name: str, out_dir: str | os.PathLike, *,
               cache_dir: str | os.PathLike | None = None) -> Path:
    """Write the delta of ``model`` over the encoder ``base_name`` into ``out_dir`` (atomic).

    ``cache_dir`` is passed to :func:`reranker.encoder.resolve_encoder_path` for the base (the
    multilingual base is built into the cache on first use).
    """
    base = load_encoder(base_name, device="cpu", cache_dir=cache_dir)
    changed = {name: t.detach().to("cpu", torch.float16).contiguous()
               for name, t in _changed(model.to("cpu"), base).items()}
    if not changed:
        raise LexrerankError("the encoder equals its base: there is no delta to save")
    out = Path(out_dir)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        save_file(changed, str(tmp / DELTA_WEIGHTS))
        config = {
            "format": FORMAT, "base": base_name,
            "base_fingerprint": encoder_fingerprint(base_name, cache_dir=cache_dir),
            # Set for every encoder this project loads (a Transformer module first).
            "max_seq_length": int(cast(int, model.max_seq_length)),
            "prompts": {k: v for k, v in model.prompts.items() if v},
            "tensors": len(changed),
            "weights_sha256": _sha256(tmp / DELTA_WEIGHTS),
        }
        (tmp / DELTA_CONFIG).write_text(json.dumps(config, indent=2), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _read_config(delta_dir: Path) -> dict:
    try:
        config = json.loads((delta_dir / DELTA_CONFIG).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise LexrerankError(f"{delta_dir / DELTA_CONFIG}: not a readable delta ({exc})") from exc
    if config.get("format") != FORMAT:
        raise LexrerankError(f"{delta_dir}: unknown delta format {config.get('format')!r}")
    return config


def materialize(delta_dir: str | os.PathLike, cache_root: str | os.PathLike, *,
                base_cache_dir: str | os.PathLike | None = None) -> Path:
    """The full encoder directory of a delta, written into ``cache_root`` on first use.

    ``cache_root`` is the directory of built encoders (:func:`reranker.encoder.resolve_encoder_path`
    uses ``<cache_dir>/encoders``); ``base_cache_dir`` is the ``cache_dir`` the delta's base
    encoder is resolved with (the multilingual base is itself built into a cache).

    Raises:
        LexrerankError: the delta's weights do not match its config (modified or corrupted),
            or its base encoder is not the one it was made from (fingerprint differs).
    """
    delta = Path(delta_dir)
    config = _read_config(delta)
    weights = delta / DELTA_WEIGHTS
    if not weights.is_file() or _sha256(weights) != config.get("weights_sha256"):
        raise LexrerankError(f"{weights}: sha256 does not match {DELTA_CONFIG}; the encoder "
                             "delta was modified or corrupted")
    root = Path(cache_root)
    # "v2": the layout written by _write_materialized (base files kept byte for byte).
    out = root / f"delta-v2-{config['weights_sha256'][:16]}"
    if (out / "modules.json").is_file():
        return out
    base_dir = resolve_encoder_path(config["base"], cache_dir=base_cache_dir)
    if encoder_fingerprint(base_dir) != config["base_fingerprint"]:
        raise LexrerankError(
            f"{delta}: made for base encoder {config['base']!r} with fingerprint "
            f"{config['base_fingerprint']}, but {base_dir} has {encoder_fingerprint(base_dir)}; "
            "install the base encoder the delta was trained from")
    out = _write_materialized(base_dir, weights, config, out)
    return out


def _write_materialized(base_dir: str, weights: Path, config: dict, out: Path) -> Path:
    """Copy the base directory byte for byte and replace only its transformer weights.

    No library re-saves anything: the files (and so the fingerprint, the version of the
    stored article vectors) are the same whatever transformers or sentence-transformers
    version runs.
    """
    base = Path(base_dir)
    modules = json.loads((base / "modules.json").read_text(encoding="utf-8"))
    if not modules or modules[0].get("path", "") != "" or not (base / BASE_WEIGHTS).is_file():
        raise LexrerankError(f"{base}: expected its transformer as module 0 at the top level "
                             f"with {BASE_WEIGHTS}; cannot apply a delta to it")
    state = load_file(str(base / BASE_WEIGHTS))
    for name, tensor in load_file(str(weights)).items():
        key = _transformer_key(name)
        if key not in state:
            raise LexrerankError(f"{weights}: tensor {name} is not in the base encoder")
        state[key] = tensor.to(state[key].dtype).contiguous()
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copytree(base, tmp)
        save_file(state, str(tmp / BASE_WEIGHTS), metadata={"format": "pt"})
        st_config = tmp / "sentence_bert_config.json"
        data = json.loads(st_config.read_text(encoding="utf-8")) if st_config.is_file() else {}
        data["max_seq_length"] = int(config["max_seq_length"])
        st_config.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
        tmp.rename(out)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (out / "modules.json").is_file():  # not "another process made it first"
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _transformer_key(name: str) -> str:
    """``0.model.encoder.layer.0...`` (a SentenceTransformer state-dict name; older versions
    say ``0.auto_model.``) -> the name in the transformer's own weights file."""
    index, _, rest = name.partition(".")
    attribute, _, key = rest.partition(".")
    if index != "0" or attribute not in ("model", "auto_model") or not key:
        raise LexrerankError(f"delta tensor {name!r} is not a weight of the transformer module")
    return key

