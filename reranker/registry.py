"""Reranker names -> checkpoint directories (the shipped weights, or your own)."""

from __future__ import annotations

import os
from pathlib import Path

from lexrerank.errors import LexrerankError

MODEL_NAMES = ("paraformer", "attentive-cnn")
SHIPPED_WEIGHTS = Path(__file__).resolve().parent / "weights"
MODEL_DIR_ENV = "LEXRERANK_MODEL_DIR"


def checkpoint_path(name: str) -> Path:
    """Where the checkpoint of ``name`` lives.

    ``name`` is a model name (``paraformer``, ``attentive-cnn``), looked up in
    ``$LEXRERANK_MODEL_DIR`` first and then in the weights shipped with the package, or the
    path of a checkpoint directory written by `lexrerank train`.
    """
    if name in MODEL_NAMES:
        custom = os.environ.get(MODEL_DIR_ENV)
        if custom and (Path(custom) / name / "config.json").is_file():
            return Path(custom) / name
        shipped = SHIPPED_WEIGHTS / name
        if (shipped / "config.json").is_file():
            return shipped
        raise LexrerankError(f"no weights for {name!r} in {SHIPPED_WEIGHTS}: train them with "
                             f"`lexrerank train --model {name} ... --out DIR` and set "
                             f"{MODEL_DIR_ENV}")
    path = Path(name).expanduser()
    if (path / "config.json").is_file():
        return path
    raise LexrerankError(f"unknown reranker {name!r}: use one of {', '.join(MODEL_NAMES)}, "
                         "none, or a checkpoint directory")
