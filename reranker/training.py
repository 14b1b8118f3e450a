"""Training loop for the rerankers on given data (no OpenSearch: candidates come in the data).

Each training query has its gold articles (positives) and BM25 hard negatives (candidates,
gold removed). Every epoch draws ``negatives_per_query`` negatives per query, a
``hard_fraction`` of them from the candidates and the rest at random from the corpus, and
minimises either

- ``listwise``: softmax cross-entropy of the positives among [positives + negatives]
  (-log sum_pos e^s + log sum_all e^s), or
- ``pairwise``: mean hinge max(0, margin - s_pos + s_neg) over all (positive, negative) pairs.

Model selection uses the dev MRR of the first gold article among [gold + dev candidates]
(ties count against the gold, so a constant scorer gets no credit). The best state (the
untrained state included) is restored at the end.

A Paraformer with a frozen encoder embeds every article sentence and every query once, then
trains the head on tensors: fast on a CPU. With ``finetune_encoder=True`` the batch's texts
go through the encoder with gradients (use a GPU).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from reranker.attentive_cnn import AttentiveCNNReranker
from reranker.errors import LexrerankError
from reranker.paraformer import Paraformer, pad_sentence_vectors
from reranker.types import state_fingerprint

__all__ = ["TrainingExample", "TrainingReport", "mrr_of_gold", "train_reranker"]

LOSSES = ("listwise", "pairwise")


@dataclass
class TrainingExample:
    """One training or dev query.

    Attributes:
        query: the query text.
        positives: doc ids of the gold articles (at least one).
        candidates: BM25 candidates with the gold removed (hard negatives; may be empty).
        qid: optional query id (used in error messages only).
    """

    query: str
    positives: list[str]
    candidates: list[str] = field(default_factory=list)
    qid: str | None = None


@dataclass
class TrainingReport:
    """What happened during :func:`train_reranker` (JSON-friendly via :meth:`to_dict`).

    ``best_epoch`` is 1-based; 0 means the untrained model was best on dev (and is kept).
    ``dev_metric[i]`` is the dev MRR after epoch i+1; ``dev_metric_initial`` before training.
    """

    kind: str
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    train_loss: list[float]
    dev_metric: list[float]
    dev_metric_initial: float | None
    best_dev_metric: float | None
    seconds: float
    examples: int
    dev_examples: int
    metric: str = "mrr"
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mrr_of_gold(scores: Sequence[float] | np.ndarray, is_gold: Sequence[bool]) -> float:
    """Reciprocal rank of the best-scored gold item; ties with non-gold count against it."""
    scores_np = np.asarray(scores, dtype=np.float64)
    gold = np.asarray(is_gold, dtype=bool)
    if not gold.any():
        return 0.0
    best = scores_np[gold].max()
    rank = 1 + int((scores_np[~gold] >= best).sum())
    return 1.0 / rank


# -- scorers: one per model family, all returning [B, N] scores ----------------------------


class _Scorer:
    """Adapter between the generic loop and a model family."""

    def modules(self) -> list[nn.Module]:
        raise NotImplementedError

    def param_groups(self, lr: float, encoder_lr: float) -> list[dict]:
        return [
            {
                "params": [p for m in self.modules() for p in m.parameters() if p.requires_grad],
                "lr": lr,
            }
        ]

    def batch_scores(self, queries: list[int], lists: list[list[str]]) -> Tensor:
        """Scores [B, len(lists[0])] with autograd; all lists have the same length."""
        raise NotImplementedError

    def eval_scores(self, queries: list[int], lists: list[list[str]]) -> list[np.ndarray]:
        """Scores for variable-length lists, no autograd (dev evaluation)."""
        raise NotImplementedError

    def state(self) -> list[dict[str, Tensor]]:
        return [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in self.modules()]

    def load_state(self, states: list[dict[str, Tensor]]) -> None:
        for m, s in zip(self.modules(), states, strict=True):
            m.load_state_dict(s)

    def finish(self) -> None:
        """Called once after the best state is restored."""


class _FrozenParaformer(_Scorer):
    def __init__(
        self,
        model: Paraformer,
        queries: list[str],
        articles: Mapping[str, Sequence[str]],
        show_progress: bool,
    ) -> None:
        self.model = model
        ids = list(articles)
        # Train on exactly what is served: the stored (vector_dtype-rounded) embeddings.
        encoded = model.encode_articles([articles[i] for i in ids], show_progress=show_progress)
        self.vectors = {
            i: torch.as_tensor(v, dtype=torch.float32) for i, v in zip(ids, encoded, strict=True)
        }
        self.queries = model.encode_queries(queries)

    def modules(self) -> list[nn.Module]:
        return [self.model.head]

    def _scores(self, queries: list[int], lists: list[list[str]]) -> Tensor:
        n = len(lists[0])
        flat = [self.vectors[d] for row in lists for d in row]
        sentences, mask = pad_sentence_vectors(flat, device=self.model.device)
        sentences = sentences.view(len(lists), n, *sentences.shape[1:])
        mask = mask.view(len(lists), n, -1)
        scores, _ = self.model.head(self.queries[queries], sentences, mask)
        return scores

    def batch_scores(self, queries: list[int], lists: list[list[str]]) -> Tensor:
        return self._scores(queries, lists)

    def eval_scores(self, queries: list[int], lists: list[list[str]]) -> list[np.ndarray]:
        with torch.no_grad():
            return [
                self._scores([q], [row])[0].cpu().numpy()
                for q, row in zip(queries, lists, strict=True)
            ]


class _FinetunedParaformer(_Scorer):
    def __init__(
        self, model: Paraformer, queries: list[str], articles: Mapping[str, Sequence[str]]
    ) -> None:
        self.model = model
        self.query_texts = queries
        self.articles = articles
        model.encoder.requires_grad_(True)

    def modules(self) -> list[nn.Module]:
        return [self.model.encoder, self.model.head]

    def param_groups(self, lr: float, encoder_lr: float) -> list[dict]:
        return [
            {"params": list(self.model.encoder.parameters()), "lr": encoder_lr},
            {"params": list(self.model.head.parameters()), "lr": lr},
        ]

    def batch_scores(self, queries: list[int], lists: list[list[str]]) -> Tensor:
        unique = list(dict.fromkeys(d for row in lists for d in row))
        flat = [s for d in unique for s in self.articles[d]]
        embedded = self.model.embed_with_grad(flat)
        per_doc, start = {}, 0
        for d in unique:
            per_doc[d] = embedded[start : start + len(self.articles[d])]
            start += len(self.articles[d])
        n = len(lists[0])
        sentences, mask = _pad_with_grad([per_doc[d] for row in lists for d in row])
        sentences = sentences.view(len(lists), n, *sentences.shape[1:])
        mask = mask.view(len(lists), n, -1)
        query = self.model.embed_with_grad([self.query_texts[q] for q in queries])
        scores, _ = self.model.head(query, sentences, mask)
        return scores

    def eval_scores(self, queries: list[int], lists: list[list[str]]) -> list[np.ndarray]:
        unique = list(dict.fromkeys(d for row in lists for d in row))
        encoded = self.model.encode_articles([self.articles[d] for d in unique])
        vectors = dict(zip(unique, encoded, strict=True))
        qvecs = self.model.encode_queries([self.query_texts[q] for q in queries])
        return [
            self.model.score(qvecs[i], [vectors[d] for d in row]).scores
            for i, row in enumerate(lists)
        ]

    def finish(self) -> None:
        self.model.encoder.requires_grad_(False)
        self.model.encoder.eval()
        # The encoder changed, so vectors made with the old fingerprint are invalid.
        self.model.encoder_fingerprint = state_fingerprint(self.model.encoder)


class _AttentiveCNN(_Scorer):
    def __init__(
        self,
        model: AttentiveCNNReranker,
        queries: list[str],
        articles: Mapping[str, Sequence[str]],
    ) -> None:
        self.model = model
        self.query_sentences = [model.query_sentences(q) for q in queries]
        self.articles = articles

    def modules(self) -> list[nn.Module]:
        return [self.model.model]

    def _scores(self, queries: list[int], lists: list[list[str]]) -> Tensor:
        # Each distinct article of the batch goes through the tower once.
        unique = list(dict.fromkeys(d for row in lists for d in row))
        position = {d: i for i, d in enumerate(unique)}
        article_vecs, _, _ = self.model.encode_texts([self.articles[d] for d in unique])
        query_vecs, _, _ = self.model.encode_texts([self.query_sentences[q] for q in queries])
        all_scores = self.model.model.score(query_vecs, article_vecs)  # [B, U]
        index = torch.tensor(
            [[position[d] for d in row] for row in lists], device=all_scores.device
        )
        return all_scores.gather(1, index)

    def batch_scores(self, queries: list[int], lists: list[list[str]]) -> Tensor:
        return self._scores(queries, lists)

    def eval_scores(self, queries: list[int], lists: list[list[str]]) -> list[np.ndarray]:
        unique = list(dict.fromkeys(d for row in lists for d in row))
        with torch.no_grad():
            stored = self.model.encode_articles([self.articles[d] for d in unique])
            vectors = dict(zip(unique, stored, strict=True))
            out = []
            for q, row in zip(queries, lists, strict=True):
                qvec = self.model.encode_query(self.query_sentences[q])
                out.append(self.model.score(qvec, [vectors[d] for d in row]).scores)
        return out


def _pad_with_grad(vectors: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Like pad_sentence_vectors but keeps autograd (used when fine-tuning the encoder)."""
    l_max = max(max(v.shape[0] for v in vectors), 1)
    d = vectors[0].shape[-1]
    rows = [torch.cat([v, v.new_zeros(l_max - v.shape[0], d)]) for v in vectors]
    lengths = torch.tensor([v.shape[0] for v in vectors], device=rows[0].device)
    mask = torch.arange(l_max, device=lengths.device)[None, :] < lengths[:, None]
    return torch.stack(rows), mask


def _make_scorer(
    model: Paraformer | AttentiveCNNReranker,
    queries: list[str],
    articles: Mapping[str, Sequence[str]],
    show_progress: bool,
) -> _Scorer:
    if isinstance(model, AttentiveCNNReranker):
        return _AttentiveCNN(model, queries, articles)
    if isinstance(model, Paraformer):
        if model.finetune_encoder:
            return _FinetunedParaformer(model, queries, articles)
        return _FrozenParaformer(model, queries, articles, show_progress)
    raise LexrerankError(
        f"cannot train a {type(model).__name__}: expected Paraformer or AttentiveCNNReranker"
    )


# -- data checks and sampling ---------------------------------------------------------------


def _check_examples(
    examples: Sequence[TrainingExample], articles: Mapping[str, Sequence[str]], what: str
) -> None:
    missing: list[str] = []
    for n, ex in enumerate(examples):
        name = ex.qid or f"#{n}"
        if not ex.positives:
            raise LexrerankError(f"{what} query {name} has no gold article; drop it or fix it")
        missing += [f"{name}:{d}" for d in [*ex.positives, *ex.candidates] if d not in articles]
    if missing:
        raise LexrerankError(
            f"{len(missing)} article ids in the {what} data are not in the corpus (e.g. "
            f"{', '.join(missing[:5])}); index the same corpus the queries refer to"
        )


def _sample_list(
    ex: TrainingExample,
    corpus_ids: list[str],
    n_neg: int,
    hard_fraction: float,
    rng: random.Random,
) -> list[str]:
    """[positives..., negatives...] with n_neg negatives (fewer if the corpus is tiny)."""
    positives = list(dict.fromkeys(ex.positives))
    excluded = set(positives)
    hard_pool = [c for c in dict.fromkeys(ex.candidates) if c not in excluded]
    n_hard = min(len(hard_pool), round(n_neg * hard_fraction))
    negatives = rng.sample(hard_pool, n_hard)
    excluded.update(negatives)
    available = len(corpus_ids) - len(excluded)
    # Fill with corpus negatives, or with more hard ones if the corpus is exhausted.
    n_rand = min(n_neg - n_hard, max(available, 0))
    while n_rand > 0:
        d = corpus_ids[rng.randrange(len(corpus_ids))]
        if d not in excluded:
            excluded.add(d)
            negatives.append(d)
            n_rand -= 1
    return positives + negatives


def _listwise(scores: Tensor, valid: Tensor, positive: Tensor) -> Tensor:
    neg_inf = torch.finfo(scores.dtype).min
    all_lse = torch.logsumexp(scores.masked_fill(~valid, neg_inf), dim=-1)
    pos_lse = torch.logsumexp(scores.masked_fill(~(valid & positive), neg_inf), dim=-1)
    return (all_lse - pos_lse).mean()


def _pairwise(scores: Tensor, valid: Tensor, positive: Tensor, margin: float) -> Tensor:
    pos = valid & positive
    neg = valid & ~positive
    diff = margin - scores.unsqueeze(-1) + scores.unsqueeze(-2)  # [B, i=pos, j=neg]
    pairs = pos.unsqueeze(-1) & neg.unsqueeze(-2)
    hinge = diff.clamp(min=0) * pairs
    return hinge.sum() / pairs.sum().clamp(min=1)


def _evaluate(
    scorer: _Scorer, dev: Sequence[TrainingExample], offset: int, batch: int = 32
) -> float:
    lists = [list(dict.fromkeys([*ex.positives, *ex.candidates])) for ex in dev]
    values = []
    for start in range(0, len(dev), batch):
        chunk = range(start, min(start + batch, len(dev)))
        scores = scorer.eval_scores([offset + i for i in chunk], [lists[i] for i in chunk])
        for i, s in zip(chunk, scores, strict=True):
            gold = set(dev[i].positives)
            values.append(mrr_of_gold(s, [d in gold for d in lists[i]]))
    return float(np.mean(values)) if values else 0.0


def _set_mode(scorer: _Scorer, training: bool) -> None:
    for m in scorer.modules():
        m.train(training)


def train_reranker(
    model: Paraformer | AttentiveCNNReranker,
    examples: Sequence[TrainingExample],
    articles: Mapping[str, Sequence[str]],
    dev_examples: Sequence[TrainingExample] | None = None,
    *,
    epochs: int = 10,
    lr: float = 1e-3,
    batch_size: int = 16,
    negatives_per_query: int = 15,
    hard_fraction: float = 0.75,
    loss: str = "listwise",
    margin: float = 1.0,
    seed: int = 13,
    patience: int = 3,
    weight_decay: float = 0.01,
    encoder_lr: float = 2e-5,
    max_grad_norm: float = 1.0,
    show_progress: bool = True,
) -> TrainingReport:
    """Train ``model`` in place and return a :class:`TrainingReport`.

    Args:
        model: a Paraformer (frozen or ``finetune_encoder=True``) or AttentiveCNNReranker.
        examples: training queries.
        articles: doc id -> the article's sentences (the whole corpus: random negatives are
            drawn from it).
        dev_examples: queries for early stopping / model selection (MRR); None = train all
            ``epochs`` and keep the last state.
        epochs, lr, batch_size: the usual (``lr`` for the head / tower; ``encoder_lr`` for a
            fine-tuned encoder).
        negatives_per_query: negatives per query per epoch; ``hard_fraction`` of them from the
            BM25 candidates, the rest random from the corpus.
        loss: "listwise" or "pairwise" (hinge with ``margin``).
        seed: seeds torch, numpy and random; the same inputs give the same model.
        patience: stop after this many epochs without a dev improvement.
        show_progress: a tqdm bar with ETA over all steps.
    """
    from tqdm.auto import tqdm

    _check_options(loss, examples, epochs, batch_size, negatives_per_query, hard_fraction)
    dev = list(dev_examples or [])
    _check_examples(examples, articles, "training")
    _check_examples(dev, articles, "dev")

    started = time.perf_counter()
    rng = _seed_everything(seed)
    queries = [ex.query for ex in examples] + [ex.query for ex in dev]
    scorer = _make_scorer(model, queries, articles, show_progress)
    optimizer = torch.optim.AdamW(
        scorer.param_groups(lr, encoder_lr), lr=lr, weight_decay=weight_decay
    )
    step = _Step(scorer, optimizer, loss, margin, max_grad_norm)
    sampler = _ListSampler(examples, sorted(articles), negatives_per_query, hard_fraction, rng)
    selection = _ModelSelection(scorer, dev, len(examples), patience)

    train_loss: list[float] = []
    bar = tqdm(
        total=epochs * math.ceil(len(examples) / batch_size),
        desc=f"train {model.kind}",
        unit="step",
        disable=not show_progress,
    )
    epoch = 0
    try:
        for epoch in range(1, epochs + 1):
            train_loss.append(_train_epoch(step, sampler, batch_size, bar, epoch))
            if selection.after_epoch(epoch, train_loss[-1], bar):
                break
    finally:
        bar.total = bar.n  # an early stop should not leave the bar "unfinished"
        bar.refresh()
        bar.close()

    best_epoch = selection.restore_best(epoch)
    _set_mode(scorer, False)
    scorer.finish()
    return TrainingReport(
        kind=model.kind,
        best_epoch=best_epoch,
        epochs_run=epoch,
        stopped_early=selection.stopped_early,
        train_loss=train_loss,
        dev_metric=selection.dev_metric,
        dev_metric_initial=selection.initial,
        best_dev_metric=selection.best_metric,
        seconds=round(time.perf_counter() - started, 3),
        examples=len(examples),
        dev_examples=len(dev),
        params={
            "epochs": epochs,
            "lr": lr,
            "batch_size": batch_size,
            "negatives_per_query": negatives_per_query,
            "hard_fraction": hard_fraction,
            "loss": loss,
            "margin": margin,
            "seed": seed,
            "patience": patience,
            "weight_decay": weight_decay,
            "encoder_lr": encoder_lr if isinstance(model, Paraformer) else None,
            "finetune_encoder": getattr(model, "finetune_encoder", False),
        },
    )


# -- the steps of train_reranker ------------------------------------------------------------


def _check_options(loss: str, examples: Sequence[TrainingExample], epochs: int,
                   batch_size: int, negatives_per_query: int, hard_fraction: float) -> None:
    if loss not in LOSSES:
        raise LexrerankError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    if not examples:
        raise LexrerankError("no training examples")
    if negatives_per_query < 1 or batch_size < 1 or epochs < 1:
        raise LexrerankError("epochs, batch_size and negatives_per_query must be at least 1")
    if not 0.0 <= hard_fraction <= 1.0:
        raise LexrerankError("hard_fraction must be between 0 and 1")


def _seed_everything(seed: int) -> random.Random:
    """Seed random, numpy and torch; the returned generator draws the batches and negatives."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return random.Random(seed)


@dataclass
class _ListSampler:
    """Shuffles the training queries per epoch and draws each one's [positives + negatives]."""

    examples: Sequence[TrainingExample]
    corpus_ids: list[str]
    negatives_per_query: int
    hard_fraction: float
    rng: random.Random

    def epoch_order(self) -> list[int]:
        order = list(range(len(self.examples)))
        self.rng.shuffle(order)
        return order

    def lists(self, batch: list[int]) -> list[list[str]]:
        return [_sample_list(self.examples[i], self.corpus_ids, self.negatives_per_query,
                             self.hard_fraction, self.rng) for i in batch]


@dataclass
class _Step:
    """One optimisation step: scores of a batch of lists, the loss, backward, clip, update."""

    scorer: _Scorer
    optimizer: torch.optim.Optimizer
    loss: str
    margin: float
    max_grad_norm: float

    def __post_init__(self) -> None:
        self.params = [p for group in self.optimizer.param_groups for p in group["params"]]

    def __call__(self, batch: list[int], lists: list[list[str]],
                 examples: Sequence[TrainingExample]) -> float:
        width = max(len(row) for row in lists)
        # Pad lists to one width by repeating their first entry; masked out below.
        valid = torch.tensor([[j < len(row) for j in range(width)] for row in lists])
        positive = torch.tensor(
            [[j < len(set(examples[i].positives)) for j in range(width)] for i in batch]
        )
        padded = [row + [row[0]] * (width - len(row)) for row in lists]
        scores = self.scorer.batch_scores(batch, padded)
        valid, positive = valid.to(scores.device), positive.to(scores.device)
        if self.loss == "listwise":
            value = _listwise(scores.float(), valid, positive)
        else:
            value = _pairwise(scores.float(), valid, positive, self.margin)
        self.optimizer.zero_grad(set_to_none=True)
        value.backward()
        if self.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        self.optimizer.step()
        return float(value.detach())


def _train_epoch(step: _Step, sampler: _ListSampler, batch_size: int, bar: Any,
                 epoch: int) -> float:
    """One pass over the shuffled training queries; returns the mean training loss."""
    _set_mode(step.scorer, True)
    order = sampler.epoch_order()
    losses = []
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        losses.append(step(batch, sampler.lists(batch), sampler.examples))
        bar.update(1)
        bar.set_postfix(epoch=epoch, loss=f"{np.mean(losses):.4f}")
    return float(np.mean(losses))


class _ModelSelection:
    """Dev MRR after every epoch, the best state so far (the untrained one included), and
    early stopping after ``patience`` epochs without improvement. Without dev queries every
    epoch runs and the last state is kept."""

    def __init__(self, scorer: _Scorer, dev: Sequence[TrainingExample], offset: int,
                 patience: int) -> None:
        self.scorer, self.dev, self.offset, self.patience = scorer, dev, offset, patience
        self.dev_metric: list[float] = []
        self.initial: float | None = None
        self.best_metric: float | None = None
        self.best_epoch = 0
        self.best_state: list[dict[str, Tensor]] | None = None
        self.bad_epochs = 0
        self.stopped_early = False
        if dev:
            _set_mode(scorer, False)
            self.initial = self.best_metric = _evaluate(scorer, dev, offset)
            self.best_state = scorer.state()

    def after_epoch(self, epoch: int, train_loss: float, bar: Any) -> bool:
        """Evaluate on dev after ``epoch``; True means stop training."""
        if not self.dev:
            return False
        _set_mode(self.scorer, False)
        metric = _evaluate(self.scorer, self.dev, self.offset)
        self.dev_metric.append(metric)
        bar.set_postfix(epoch=epoch, loss=f"{train_loss:.4f}", dev_mrr=f"{metric:.4f}")
        # Evaluated in __init__ whenever there is dev (cast, not assert: bandit B101).
        if metric > cast(float, self.best_metric) + 1e-9:
            self.best_metric, self.best_epoch = metric, epoch
            self.best_state, self.bad_epochs = self.scorer.state(), 0
            return False
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            self.stopped_early = True
            return True
        return False

    def restore_best(self, last_epoch: int) -> int:
        """Load the best state into the model; returns its epoch (``last_epoch`` without dev)."""
        if self.best_state is not None:
            self.scorer.load_state(self.best_state)
            return self.best_epoch
        return last_epoch
