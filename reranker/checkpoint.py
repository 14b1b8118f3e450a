"""Checkpoints: ``model.safetensors`` + ``config.json`` (+ ``vocab.json``), written atomically.

A checkpoint directory holds:

- ``model.safetensors``: the trained weights (Paraformer: the head only; Attentive CNN: the
  whole tower). No pickle anywhere.
- ``config.json``: ``kind``, ``format_version``, ``encoder`` (name or path),
  ``encoder_fingerprint``, ``model`` (architecture), ``model_version``, ``weights_sha256``
  and the free-form sections ``fusion``, ``cutoff``, ``training``, ``metrics`` that other
  code fills.
- ``vocab.json`` (Attentive CNN): the word vocabulary.
- ``encoder/`` (Paraformer with a fine-tuned encoder only): the SentenceTransformer.

``config.json`` also records ``languages``: the corpus languages the model was trained for.
:func:`check_language` refuses to rerank an index of another language with it.

An ensemble checkpoint (:mod:`reranker.ensemble`) has a ``config.json`` only: its members are
other checkpoint directories, named relative to it.

Saving writes everything into a temporary sibling directory and renames it into place, so a
reader sees the old checkpoint or the new one, never a mix; a failed save leaves nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from safetensors.torch import load_file, save_file

from reranker.attentive_cnn import AttentiveCNNReranker
from reranker.attentive_cnn_tower import AttentiveCNN
from reranker.cutoff import CutoffPolicy
from reranker.dense import DenseReranker
from reranker.encoder import encoder_fingerprint, load_encoder, resolve_encoder_path
from reranker.ensemble import Ensemble
from reranker.errors import LanguageMismatch, LexrerankError
from reranker.fusion import WeightedFusion
from reranker.model_names import backend_for
from reranker.paraformer import Paraformer, ParaformerHead
from reranker.word_vocab import WordVocab

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["CONFIG_FILE", "RERANKER_KINDS", "WEIGHTS_FILE", "check_language", "load_reranker",
           "model_languages", "read_config", "save_checkpoint", "save_ensemble"]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
VOCAB_FILE = "vocab.json"
ENCODER_DIR = "encoder"
FORMAT_VERSION = 1
#: The reranker kinds a checkpoint's ``config.json`` may name.
RERANKER_KINDS = ("paraformer", "attentive-cnn", "dense", "ensemble")
FREE_SECTIONS = ("fusion", "cutoff", "training", "metrics")

CacheDir = str | os.PathLike | None

#: What :func:`save_checkpoint` writes (weights + config); an ensemble is saved by
#: :func:`save_ensemble`.
SavableModel = Paraformer | AttentiveCNNReranker | DenseReranker
#: What :func:`load_reranker` returns.
LoadedModel = Paraformer | AttentiveCNNReranker | DenseReranker | Ensemble


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _fsync_dir(path: Path) -> None:
    # Make the renames durable; not all platforms allow opening a directory.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_text(path: Path, text: str) -> None:
    with path.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _state_for(model: SavableModel) -> dict[str, torch.Tensor]:
    if isinstance(model, DenseReranker):
        return {}  # nothing trained beside its encoder
    module = model.head if isinstance(model, Paraformer) else model.model
    # Contiguous CPU copies: safetensors refuses shared or strided storage.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


def save_checkpoint(
    out_dir: str | os.PathLike, model: SavableModel, config: dict | None = None
) -> Path:
    """Write ``model`` and ``config`` as a checkpoint directory, atomically.

    Args:
        out_dir: the checkpoint directory. An existing checkpoint there is replaced; any other
            non-empty directory is refused (so a typo cannot delete unrelated files).
        model: a :class:`Paraformer`, :class:`AttentiveCNNReranker` or :class:`DenseReranker`.
        config: extra JSON-serialisable keys, typically the sections ``fusion``, ``cutoff``,
            ``training``, ``metrics``. Keys this function computes (``kind``,
            ``model_version``, ...) take precedence.
    Returns:
        The checkpoint directory.
    """
    out = Path(out_dir).expanduser().resolve()
    _check_savable(out, model)
    user = _json_config(config)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        document, fingerprint = _write_checkpoint_files(tmp, model, user)
        _replace_directory(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if isinstance(model, Paraformer) and model.finetune_encoder:
        # The saved directory now defines the encoder's version (see Paraformer docs).
        model.encoder_fingerprint = cast(str, fingerprint)  # the saved encoder's (a str)
        model.encoder_name = str(out / ENCODER_DIR)
    model.checkpoint_config = document
    return out


def _check_savable(out: Path, model: object) -> None:
    """Refuse a model that has no checkpoint format, and a target that is not a checkpoint."""
    if not isinstance(model, (Paraformer, AttentiveCNNReranker, DenseReranker)):
        raise LexrerankError(
            f"cannot save a {type(model).__name__}: expected Paraformer, AttentiveCNNReranker "
            "or DenseReranker"
        )
    foreign = out.exists() and (
        not out.is_dir() or (any(out.iterdir()) and not (out / CONFIG_FILE).is_file())
    )
    if foreign:
        raise LexrerankError(
            f"{out} exists and is not a lexrerank checkpoint; choose a new or empty directory"
        )


def _json_config(config: dict | None) -> dict:
    """A copy of the caller's config, checked to be JSON before anything touches the disk."""
    user = dict(config or {})
    try:
        json.dumps(user)
    except (TypeError, ValueError) as exc:
        raise LexrerankError(f"checkpoint config is not JSON-serialisable: {exc}") from exc
    return user


def _write_checkpoint_files(tmp: Path, model: SavableModel, user: dict
                            ) -> tuple[dict[str, Any], str | None]:
    """Write the weights, vocabulary, fine-tuned encoder and config.json into ``tmp``.

    Returns the config document and the encoder fingerprint it records.
    """
    encoder_name = model.encoder_name
    fingerprint = model.encoder_fingerprint
    if isinstance(model, Paraformer) and model.finetune_encoder:
        # A fine-tuned encoder is part of the model: save it beside the head.
        model.encoder.save(str(tmp / ENCODER_DIR), create_model_card=False)
        fingerprint = encoder_fingerprint(tmp / ENCODER_DIR)
        encoder_name = ENCODER_DIR
    if isinstance(model, AttentiveCNNReranker):
        _write_text(tmp / VOCAB_FILE, model.vocab.to_json())
    weights = tmp / WEIGHTS_FILE
    save_file(_state_for(model), str(weights), metadata={"kind": model.kind})
    with weights.open("rb") as fh:
        os.fsync(fh.fileno())
    model_version = fingerprint if isinstance(model, Paraformer) else model.model_version
    document: dict[str, Any] = {section: {} for section in FREE_SECTIONS}
    document.update(user)
    document.update(
        {
            "kind": model.kind,
            "format_version": FORMAT_VERSION,
            "encoder": encoder_name,
            "encoder_fingerprint": fingerprint,
            "model": model.architecture(),
            "model_version": model_version,
            "weights_file": WEIGHTS_FILE,
            "weights_sha256": _sha256(weights),
        }
    )
    if isinstance(model, Paraformer):
        document["head_version"] = model.head_version
    _write_text(tmp / CONFIG_FILE, json.dumps(document, indent=2, ensure_ascii=False))
    _fsync_dir(tmp)
    return document, fingerprint


def _replace_directory(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an old ``out`` is moved aside first and restored on failure."""
    backup = None
    if out.exists():
        backup = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        out.rename(backup)
    try:
        tmp.rename(out)
    except BaseException:
        if backup is not None:
            backup.rename(out)
        raise
    _fsync_dir(out.parent)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """The ``config.json`` of a checkpoint directory, with a clear error when it is not one."""
    ckpt = Path(path).expanduser()
    config_path = ckpt / CONFIG_FILE
    if not config_path.is_file():
        raise LexrerankError(
            f"{ckpt} is not a reranker checkpoint (no {CONFIG_FILE}); train one with "
            "`lexrerank train ... --out DIR`"
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LexrerankError(f"{config_path}: not valid JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise LexrerankError(f"{config_path}: expected a JSON object")
    return config


def _resolve_checkpoint_encoder(ckpt: Path, name: str | None, cache_dir: CacheDir) -> str:
    if name and not os.path.isabs(name) and (ckpt / name).is_dir():
        return str(ckpt / name)
    return resolve_encoder_path(name, cache_dir=cache_dir)


def load_reranker(
    path: str | os.PathLike, device: str | None = None, encoder: str | None = None,
    encoders: dict | None = None, *, cache_dir: CacheDir = None, backend: str = "torch",
) -> LoadedModel:
    """Load a checkpoint written by :func:`save_checkpoint` (or :func:`save_ensemble`).

    Args:
        path: the checkpoint directory.
        device: torch device; default cuda when available, else cpu.
        encoder: Paraformer only: use this encoder name/path instead of the recorded one
            (its fingerprint must still match the checkpoint's).
        encoders: shared between calls, so models on one encoder load it once.
        cache_dir: the cache root that encoders built on first use live under (the
            multilingual encoder, a fine-tuned encoder shipped as a delta): see
            :func:`reranker.encoder.resolve_encoder_path`; ONNX exports are kept there too.
        backend: the encoder runtime (:data:`reranker.model_names.ENCODER_BACKENDS`, or
            ``auto``: the checkpoint's languages choose, :func:`reranker.model_names.
            backend_for`): a variant other than ``torch`` is exported on first use and
            changes the model version (:func:`reranker.onnx_encoder.serve_with_backend`). It
            runs on CPU: a CUDA ``device`` is overridden (with a warning), so that a GPU
            worker computes the same version as the CPU indexers; GPU deployments choose
            ``torch``.
    Raises:
        LexrerankError: not a checkpoint, unknown kind, weights modified (sha256 mismatch),
            or an encoder whose fingerprint differs from the one the model was trained with.
    """
    ckpt = Path(path).expanduser()
    config = read_config(ckpt)
    backend = backend_for(backend, config.get("languages"))
    if backend != "torch" and (device is None or torch.device(device).type != "cpu"):
        if device is not None or torch.cuda.is_available():
            log.warning("encoder backend %s runs on CPU: %s loads on CPU, not %s (set "
                        "LEXRERANK_ENCODER_BACKEND=torch on GPU workers and their indexers)",
                        backend, ckpt, device or "cuda")
        device = "cpu"
    kind = config.get("kind")
    if kind not in RERANKER_KINDS:
        raise LexrerankError(
            f"{ckpt / CONFIG_FILE}: unknown reranker kind {kind!r}; valid kinds: "
            f"{', '.join(RERANKER_KINDS)}"
        )
    if kind == "ensemble":
        return _served(_load_ensemble(ckpt, config, device,
                                      {} if encoders is None else encoders, cache_dir),
                       backend, cache_dir)
    weights = ckpt / config.get("weights_file", WEIGHTS_FILE)
    if not weights.is_file():
        raise LexrerankError(f"{ckpt}: missing {weights.name}; the checkpoint is incomplete")
    expected = config.get("weights_sha256")
    if not expected or _sha256(weights) != expected:
        raise LexrerankError(
            f"{weights}: sha256 does not match config.json; the weights were modified or "
            "corrupted. Restore the checkpoint or train a new one."
        )
    state = load_file(str(weights), device="cpu")
    arch = dict(config.get("model") or {})
    model: SavableModel
    try:
        if kind == "paraformer":
            model = _load_paraformer(ckpt, config, arch, state, device,
                                     _EncoderChoice(encoder, encoders, cache_dir))
        elif kind == "dense":
            model = _load_dense(ckpt, config, arch, device,
                                _EncoderChoice(encoder, encoders, cache_dir))
        else:
            model = _load_attentive_cnn(ckpt, config, arch, state, device)
    except (KeyError, TypeError, RuntimeError) as exc:
        raise LexrerankError(f"{ckpt}: config and weights do not fit together ({exc})") from exc
    if config.get("model_version") and model.model_version != config["model_version"]:
        raise LexrerankError(
            f"{ckpt}: the loaded model's version {model.model_version} differs from "
            f"config.json's {config['model_version']}; the checkpoint is inconsistent"
        )
    model.checkpoint_config = config
    return _served(model, backend, cache_dir)


def served_model_version(config: dict, backend: str) -> str:
    """The model version a checkpoint's ``config`` has when served on encoder ``backend``,
    without loading it (a reindex job records what its embed workers will write).

    ``torch`` and models without an encoder (Attentive CNN) keep the recorded version;
    ``auto`` is the backend the config's languages choose.
    """
    backend = backend_for(backend, config.get("languages"))
    version = str(config["model_version"])
    if backend == "torch" or config.get("kind") not in ("paraformer", "dense"):
        return version
    from reranker.onnx_encoder import served_fingerprint

    served = served_fingerprint(str(config["encoder_fingerprint"]), backend)
    if config["kind"] == "paraformer":
        return Paraformer.version_of(served)
    return DenseReranker.version_of(served)


def _served(model: LoadedModel, backend: str, cache_dir: CacheDir) -> LoadedModel:
    if backend == "torch":
        return model
    from reranker.onnx_encoder import serve_with_backend

    return cast(LoadedModel, serve_with_backend(model, backend, cache_dir))


@dataclass(frozen=True)
class _EncoderChoice:
    """How :func:`load_reranker` finds a model's encoder: an override of the recorded name,
    the encoders already loaded (keyed by directory and device), the cache root."""

    override: str | None
    loaded: dict | None
    cache_dir: CacheDir


def _checked_encoder(ckpt: Path, config: dict, device: str | None, choice: _EncoderChoice
                     ) -> tuple[SentenceTransformer, str | None]:
    """The encoder a checkpoint was trained with (fingerprint checked) and its name.

    ``choice.loaded`` shares loaded encoders between the members of one ensemble, keyed by
    directory and device, so a Paraformer and a dense model on the same encoder hold one copy.
    """
    encoder_override, encoders = choice.override, choice.loaded
    recorded = config.get("encoder")
    encoder_dir = _resolve_checkpoint_encoder(ckpt, encoder_override or recorded,
                                              choice.cache_dir)
    actual = encoder_fingerprint(encoder_dir, cache_dir=choice.cache_dir)
    expected = config.get("encoder_fingerprint")
    if actual != expected:
        raise LexrerankError(
            f"{ckpt}: this {config.get('kind')} model was trained with encoder {recorded!r} "
            f"(fingerprint {expected}), but {encoder_dir} has fingerprint {actual}. Configure "
            "the same encoder (LEXRERANK_ENCODER or --encoder) or retrain the reranker."
        )
    key = (str(Path(encoder_dir).resolve()), device)
    if encoders is not None and key in encoders:
        st = encoders[key]
    else:
        st = load_encoder(encoder_dir, device=device, cache_dir=choice.cache_dir)
        if encoders is not None:
            encoders[key] = st
    relative = recorded and not os.path.isabs(recorded) and (ckpt / recorded).is_dir()
    name = encoder_dir if relative else (encoder_override or recorded)
    return st, name


def _load_paraformer(
    ckpt: Path,
    config: dict,
    arch: dict,
    state: dict,
    device: str | None,
    choice: _EncoderChoice,
) -> Paraformer:
    head = ParaformerHead(arch["dim"], hidden=arch["hidden"], dropout=arch["dropout"])
    head.load_state_dict(state, strict=True)
    st, name = _checked_encoder(ckpt, config, device, choice)
    return Paraformer(
        st,
        head,
        finetune_encoder=False,
        encoder_name=name,
        vector_dtype=arch.get("vector_dtype", "float16"),
    )


def _load_dense(ckpt: Path, config: dict, arch: dict, device: str | None,
                choice: _EncoderChoice) -> DenseReranker:
    st, name = _checked_encoder(ckpt, config, device, choice)
    return DenseReranker(st, encoder_name=name, vector_dtype=arch.get("vector_dtype", "float16"))


def _load_attentive_cnn(
    ckpt: Path, config: dict, arch: dict, state: dict, device: str | None
) -> AttentiveCNNReranker:
    vocab_path = ckpt / VOCAB_FILE
    if not vocab_path.is_file():
        raise LexrerankError(f"{ckpt}: missing {VOCAB_FILE}; the checkpoint is incomplete")
    vocab = WordVocab.from_json(vocab_path.read_text(encoding="utf-8"))
    model = AttentiveCNN(
        arch["vocab_size"],
        embedding_dim=arch["embedding_dim"],
        channels=arch["channels"],
        kernel_size=arch["kernel_size"],
        attention_dim=arch["attention_dim"],
        dropout=arch["dropout"],
        init_scale=arch.get("init_scale", 10.0),
    )
    model.load_state_dict(state, strict=True)
    return AttentiveCNNReranker(
        model,
        vocab,
        max_sentences=arch["max_sentences"],
        max_words=arch["max_words"],
        vector_dtype=arch.get("vector_dtype", "float16"),
        encoder_name=config.get("encoder"),
        encoder_fingerprint=config.get("encoder_fingerprint"),
        device=device,
    )


def _load_ensemble(ckpt: Path, config: dict, device: str | None, encoders: dict,
                   cache_dir: CacheDir) -> Ensemble:
    members = config.get("members")
    if not isinstance(members, dict) or not members:
        raise LexrerankError(f"{ckpt / CONFIG_FILE}: an ensemble needs a 'members' object")
    loaded = {}
    for name, relative in members.items():
        member_dir = (ckpt / str(relative)).resolve()
        model = load_reranker(member_dir, device=device, encoders=encoders, cache_dir=cache_dir)
        if isinstance(model, Ensemble):
            raise LexrerankError(f"{ckpt}: member {name!r} is itself an ensemble")
        loaded[name] = model
    try:
        fusion = WeightedFusion.from_dict(config.get("fusion") or {})
    except ValueError as exc:
        raise LexrerankError(f"{ckpt / CONFIG_FILE}: {exc}") from exc
    model = Ensemble(loaded, fusion)
    model.checkpoint_config = config
    return model


def save_ensemble(out_dir: str | os.PathLike, members: dict[str, str], fusion: WeightedFusion,
                  cutoff: CutoffPolicy, languages: list[str], training: dict | None = None
                  ) -> Path:
    """Write an ensemble checkpoint (``config.json`` only); ``members`` are relative paths."""
    out = Path(out_dir)
    for name, relative in members.items():
        if not ((out / relative).resolve() / CONFIG_FILE).is_file():
            raise LexrerankError(f"ensemble member {name!r}: {out / relative} is not a "
                                 "checkpoint")
    document = {"kind": "ensemble", "format_version": FORMAT_VERSION, "languages": languages,
                "members": members, "fusion": fusion.to_dict(), "cutoff": cutoff.to_dict(),
                "training": training or {}, "metrics": {}}
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{CONFIG_FILE}.tmp-{uuid.uuid4().hex[:8]}"
    _write_text(tmp, json.dumps(document, indent=2, ensure_ascii=False))
    tmp.replace(out / CONFIG_FILE)
    return out


def model_languages(config: dict) -> tuple[str, ...]:
    """The corpus languages a checkpoint was trained for (empty: not recorded)."""
    languages = config.get("languages") or ()
    return tuple(str(x) for x in languages) if isinstance(languages, list) else ()


def check_language(config: dict, name: str, index: str, index_language: str | None) -> None:
    """Refuse a model for an index of a language it was not trained for.

    A checkpoint that records no languages, or an index that records none, is not refused
    (older checkpoints and foreign indexes keep working).
    """
    languages = model_languages(config)
    if not languages or not index_language or index_language in languages:
        return
    raise LanguageMismatch(
        f"model {name!r} was trained for {', '.join(languages)} statutes, but index {index!r} "
        f"is {index_language}: use a model trained for {index_language} (the default model "
        f"of a language is picked with --reranker default / no ext.rerank.model)")
