"""The models of one fold, trained on its training part only, and their scores on its windows.

For a fold the protocol needs, on the dev and test queries' BM25 windows, one score per
candidate from each model:

- ``dense``: cosine of the fine-tuned encoder's query and article (caption + body) vectors;
  the bi-encoder alone, the floor the attentive heads must beat.
- ``paraformer``: the Paraformer head trained (frozen encoder, two-stage) over sentence
  embeddings of the fold's fine-tuned encoder.
- ``attentive-cnn``: the Attentive CNN, its vocabulary built from the corpus of the fold's
  language, trained on the fold's training queries.

Head checkpoints are cached like the encoders (``<LEXRERANK_CACHE>/quality/heads/<key>``), so
the release fold's models can be shipped as they were measured.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.quality_data import CorpusArticle, Window, training_examples
from bench.quality_folds import Fold, encoder_cache_root, fold_encoder
from lexrerank.config import get_settings
from reranker.checkpoint import load_reranker, save_checkpoint
from reranker.dense import passage
from reranker.encoder import (
    encoder_fingerprint,
    encoder_source,
    load_encoder,
    resolve_encoder_path,
)
from reranker.encoder_training import EncoderTrainingOptions
from reranker.onnx_encoder import to_onnx_backend
from reranker.paraformer import Paraformer
from reranker.training import TrainingExample, train_reranker

MODELS = ("dense", "paraformer", "attentive-cnn")


@dataclass(frozen=True)
class HeadOptions:
    """Training settings of the heads (fixed in advance, not tuned on any reported year)."""

    paraformer_epochs: int = 6
    paraformer_negatives: int = 15
    attentive_cnn_epochs: int = 2
    attentive_cnn_negatives: int = 7
    patience: int = 2
    seed: int = 13


@dataclass
class FoldModels:
    encoder_dir: Path
    encoder_report: dict
    paraformer_dir: Path | None
    attentive_cnn_dir: Path | None


def _examples(queries: Sequence, windows: Mapping[str, Window],
              corpus: Mapping[str, CorpusArticle]) -> list[TrainingExample]:
    return training_examples(queries, dict(windows), dict(corpus))


def _head_dir(kind: str, fold: Fold, key_parts: Sequence[str]) -> Path:
    digest = hashlib.sha256("\0".join(key_parts).encode()).hexdigest()[:16]
    return encoder_cache_root().parent / "heads" / f"{fold.name}-{kind}-{digest}"


class MemoEncoder:
    """A frozen SentenceTransformer whose document and query encodings are memoised by text.

    Folds that share a frozen encoder (ALQAC) then encode each corpus sentence once, not once
    per fold. Everything else is the wrapped model's.
    """

    def __init__(self, model: Any) -> None:
        self._model = model
        self._memo: dict[tuple[str, str], np.ndarray] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def _memoised(self, kind: str, texts: Sequence[str], **kwargs: Any) -> Any:
        encode = getattr(self._model, f"encode_{kind}")
        kind = f"{kind}/{bool(kwargs.get('normalize_embeddings'))}"
        missing = [t for t in dict.fromkeys(texts) if (kind, t) not in self._memo]
        if missing:
            as_numpy = {**kwargs, "convert_to_numpy": True, "convert_to_tensor": False}
            self._memo.update({(kind, t): v for t, v in
                               zip(missing, encode(list(missing), **as_numpy), strict=True)})
        out = np.stack([self._memo[(kind, t)] for t in texts])
        return torch.from_numpy(out) if kwargs.get("convert_to_tensor") else out

    def encode_document(self, texts: Sequence[str], **kwargs: Any) -> Any:
        return self._memoised("document", texts, **kwargs)

    def encode_query(self, texts: Sequence[str], **kwargs: Any) -> Any:
        return self._memoised("query", texts, **kwargs)


_frozen_encoders: dict[tuple[str, str], MemoEncoder] = {}


def frozen_encoder(path: str, backend: str = "torch") -> MemoEncoder:
    """The process-wide memoised encoder of ``path`` on ``backend`` (loaded once).

    A backend other than ``torch`` is the ONNX export of that directory
    (:mod:`reranker.onnx_encoder`), on CPU: how a CPU worker would serve the fold's model.
    """
    key = (path, backend)
    if key not in _frozen_encoders:
        cache_dir = get_settings().cache_dir
        encoder = load_encoder(path, device="cpu" if backend != "torch" else None,
                               cache_dir=cache_dir)
        if backend != "torch":
            to_onnx_backend(encoder, path, encoder_fingerprint(path), backend, cache_dir)
        _frozen_encoders[key] = MemoEncoder(encoder)
    return _frozen_encoders[key]


def train_fold(fold: Fold, corpus: Mapping[str, CorpusArticle], windows: Mapping[str, Window],
               base_encoder: str, encoder_options: EncoderTrainingOptions | None,
               head_options: HeadOptions, models: Sequence[str] = MODELS,
               show_progress: bool = True) -> FoldModels:
    """Train (or load from the cache) every model of ``fold`` on its training queries.

    ``encoder_options`` None keeps the base encoder frozen (no fine-tuning): the dense and
    Paraformer models then read the base encoder's embeddings.
    """
    passages = {d: a.passage for d, a in corpus.items()}
    sentences = {d: list(a.sentences) for d, a in corpus.items()}
    train = _examples(fold.train, windows, corpus)
    dev = _examples(fold.dev, windows, corpus)
    cache_dir = get_settings().cache_dir
    encoder_dir = Path(resolve_encoder_path(base_encoder, cache_dir=cache_dir))
    report: dict = {"seconds": 0.0}
    if {"dense", "paraformer"} & set(models) and encoder_options is not None:
        encoder_dir, report = fold_encoder(
            fold.name, base_encoder, train, passages, encoder_options,
            articles={d: (a.caption, a.sentences) for d, a in corpus.items()},
            show_progress=show_progress, dev=dev)
    options_key = json.dumps(asdict(head_options), sort_keys=True)
    train_key = [json.dumps([ex.qid, ex.query, ex.positives, ex.candidates]) for ex in train]
    dev_key = [json.dumps([ex.qid, ex.positives, ex.candidates]) for ex in dev]
    paraformer_dir = attentive_cnn_dir = None
    if "paraformer" in models:
        paraformer_dir = _head_dir("paraformer", fold, [
            encoder_fingerprint(encoder_dir), options_key, *train_key, "dev", *dev_key])
        if not (paraformer_dir / "config.json").is_file():
            print(f"{fold.name}: training the Paraformer head", file=sys.stderr)
            encoder: Any = (frozen_encoder(str(encoder_dir)) if encoder_options is None
                            else str(encoder_dir))
            model = Paraformer(encoder, encoder_name=str(encoder_dir))
            _train_head(paraformer_dir, model, fold, train, dev, sentences,
                        head_options.paraformer_epochs, head_options.paraformer_negatives,
                        head_options, show_progress)
    if "attentive-cnn" in models:
        from reranker.attentive_cnn import AttentiveCNNReranker

        attentive_cnn_dir = _head_dir("attentive-cnn", fold, [
            encoder_fingerprint(base_encoder, cache_dir=cache_dir), options_key, *train_key,
            "dev", *dev_key])
        if not (attentive_cnn_dir / "config.json").is_file():
            print(f"{fold.name}: training the Attentive CNN", file=sys.stderr)
            # The vocabulary is the corpus' own words (the language of the fold).
            texts = [s for sents in sentences.values() for s in sents]
            model = AttentiveCNNReranker.from_corpus(
                texts + [q.text for q in fold.train],
                load_encoder(base_encoder, device="cpu", cache_dir=cache_dir))
            _train_head(attentive_cnn_dir, model, fold, train, dev, sentences,
                        head_options.attentive_cnn_epochs,
                        head_options.attentive_cnn_negatives, head_options, show_progress)
    return FoldModels(encoder_dir, report, paraformer_dir, attentive_cnn_dir)


def _train_head(path: Path, model: Any, fold: Fold, train: list[TrainingExample],
                dev: list[TrainingExample], sentences: Mapping[str, Sequence[str]],
                epochs: int, negatives: int, options: HeadOptions, show_progress: bool) -> None:
    """Train a head on the fold's training queries (early stopping on dev) and save it."""
    report = train_reranker(model, train, sentences, dev, epochs=epochs,
                            negatives_per_query=negatives, patience=options.patience,
                            seed=options.seed, show_progress=show_progress)
    save_checkpoint(path, model, {"training": {"fold": fold.describe(),
                                               "report": report.to_dict()}})


def window_scores(models: FoldModels, queries: Sequence, windows: Mapping[str, Window],
                  corpus: Mapping[str, CorpusArticle], names: Sequence[str] = MODELS,
                  encoder_backend: str = "torch") -> dict[str, dict[str, np.ndarray]]:
    """``{qid: {model name: scores [N] aligned with the window's doc ids}}``.

    ``encoder_backend``: the runtime the dense and Paraformer models encode queries and
    articles with (the heads are the ones trained on the torch encoder, as served).
    """
    needed = sorted({d for q in queries for d in windows[q.qid].doc_ids})
    out: dict[str, dict[str, np.ndarray]] = {q.qid: {} for q in queries}
    if "dense" in names:
        encoder = frozen_encoder(str(models.encoder_dir), encoder_backend)
        with torch.inference_mode():
            # The article as the served dense model reads it (caption, then sentences).
            docs = encoder.encode_document([passage(corpus[d].caption, corpus[d].sentences)
                                            for d in needed], batch_size=32,
                                           normalize_embeddings=True)
            qs = encoder.encode_query([q.text for q in queries], batch_size=32,
                                      normalize_embeddings=True)
        row = {d: i for i, d in enumerate(needed)}
        for q, vec in zip(queries, qs, strict=True):
            idx = [row[d] for d in windows[q.qid].doc_ids]
            out[q.qid]["dense"] = docs[idx] @ vec
    for name, path in (("paraformer", models.paraformer_dir),
                       ("attentive-cnn", models.attentive_cnn_dir)):
        if name not in names or path is None:
            continue
        model = load_reranker(path, device="cpu", cache_dir=get_settings().cache_dir)
        if isinstance(model, Paraformer):  # share the memoised encoder of its directory
            model.encoder = frozen_encoder(encoder_source(model.encoder) or model.encoder_name,
                                           encoder_backend)
        encoded = dict(zip(needed, model.encode_articles(
            [list(corpus[d].sentences) for d in needed]), strict=True))
        for q in queries:
            result = model.rerank(q.text, [encoded[d] for d in windows[q.qid].doc_ids])
            out[q.qid][name] = np.asarray(result.scores, dtype=np.float64)
    return out
