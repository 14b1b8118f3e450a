"""Reranker names -> checkpoint directories, per corpus language (shipped weights, or yours).

Shipped weights live in ``reranker/weights/<language>/<name>/``; a ``model_dir`` given by the
caller (the CLI and the workers pass ``LEXRERANK_MODEL_DIR``) overrides them with the same
layout (``<dir>/<language>/<name>``, or ``<dir>/<name>`` for every language). ``default``
means the language's default model: the ensemble where one is shipped, else the first model
found in :data:`reranker.model_names.MODEL_NAMES` order.
"""

from __future__ import annotations

import os
from pathlib import Path

from reranker.errors import LanguageMismatch, LexrerankError
from reranker.model_names import DEFAULT_NAME, MODEL_NAMES

SHIPPED_WEIGHTS = Path(__file__).resolve().parent / "weights"
DEFAULT_LANGUAGE = "en"

ModelDir = str | os.PathLike | None


def _candidates(name: str, language: str, model_dir: ModelDir) -> list[Path]:
    places = []
    if model_dir:
        places += [Path(model_dir) / language / name, Path(model_dir) / name]
    places.append(SHIPPED_WEIGHTS / language / name)
    return places


def available_models(language: str, model_dir: ModelDir = None) -> list[str]:
    """The model names that have a checkpoint for ``language`` (in ``model_dir`` or shipped),
    in :data:`MODEL_NAMES` order."""
    return [n for n in MODEL_NAMES
            if any((p / "config.json").is_file() for p in _candidates(n, language, model_dir))]


def resolve_name(name: str, language: str | None, model_dir: ModelDir = None) -> str:
    """``default`` -> the language's default model name; other names unchanged."""
    if name != DEFAULT_NAME:
        return name
    models = available_models(language or DEFAULT_LANGUAGE, model_dir)
    if not models:
        raise LanguageMismatch(
            f"no reranker is trained for {language or DEFAULT_LANGUAGE} statutes (shipped: "
            f"{', '.join(shipped_languages()) or 'none'}); train one (docs/training.md) and "
            "set LEXRERANK_MODEL_DIR")
    return models[0]


def shipped_languages() -> list[str]:
    if not SHIPPED_WEIGHTS.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_WEIGHTS.iterdir()
                  if p.is_dir() and any((p / n / "config.json").is_file() for n in MODEL_NAMES))


def checkpoint_path(name: str, language: str | None = None, model_dir: ModelDir = None
                    ) -> Path:
    """Where the checkpoint of ``name`` for corpus ``language`` lives.

    ``name`` is a model name (``ensemble``, ``paraformer``, ``attentive-cnn``, or ``default``),
    looked up in ``model_dir`` first and then in the shipped weights, or the path of a
    checkpoint directory written by `lexrerank train`. ``language`` defaults to English.
    """
    language = language or DEFAULT_LANGUAGE
    name = resolve_name(name, language, model_dir)
    if name in MODEL_NAMES:
        for place in _candidates(name, language, model_dir):
            if (place / "config.json").is_file():
                return place
        raise LanguageMismatch(
            f"no {name!r} weights for {language} statutes (shipped languages: "
            f"{', '.join(shipped_languages()) or 'none'}): train them with `lexrerank train "
            f"--model {name} ... --out DIR` and set LEXRERANK_MODEL_DIR")
    path = Path(name).expanduser()
    if (path / "config.json").is_file():
        return path
    raise LexrerankError(f"unknown reranker {name!r}: use one of "
                         f"{', '.join((DEFAULT_NAME, *MODEL_NAMES))}, none, or a checkpoint "
                         "directory")


def member_names(name: str, language: str | None = None, model_dir: ModelDir = None
                 ) -> list[str]:
    """The models whose article vectors ``name`` needs: its members for an ensemble (by their
    shipped names when they sit beside it, else their paths), else ``[name]`` resolved."""
    import json

    path = checkpoint_path(name, language, model_dir)
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    if config.get("kind") != "ensemble":
        return [resolve_name(name, language or DEFAULT_LANGUAGE, model_dir)]
    out = []
    for member, relative in (config.get("members") or {}).items():
        target = (path / str(relative)).resolve()
        sibling = member in MODEL_NAMES and target == (path.parent / member).resolve()
        out.append(member if sibling else str(target))
    return out
