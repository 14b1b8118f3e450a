"""Fine-tune a sentence encoder on statute queries: contrastive loss with BM25 hard negatives.

A frozen general-purpose encoder is the ceiling of any head trained on top of it, so the first
stage of training adapts the encoder itself to statute language. Each training query gives
``(anchor = query, positive = a gold article, negative = one of its BM25 hard negatives)``
triples; sentence-transformers' :class:`MultipleNegativesRankingLoss` scores each anchor
against its positive, its hard negative and every other article of the batch (in-batch
negatives; the no-duplicates batch sampler keeps a gold article from appearing twice in one
batch as a false negative). Optionally, self-supervised pairs from the corpus itself are
added: an article's caption or one of its sentences as the anchor, the article as the positive.

The word-embedding matrix is frozen by default: it is most of a small encoder's parameters
(30k x 384 of MiniLM's 22.7M, 250k x 384 of multilingual-e5-small's 118M), barely moves with
~1k queries, and leaving it untouched lets a checkpoint ship only the transformer layers
(:mod:`reranker.encoder_delta`).

Encoders with prompts (multilingual-e5: ``query: `` / ``passage: ``) are trained with them:
the anchor column gets the model's ``query`` prompt, the article columns its document prompt.

With ``select_epoch_on_dev`` the trainer scores held-out dev queries after every epoch
(sentence-transformers' :class:`InformationRetrievalEvaluator`: MRR@10 of the cosine ranking
of the whole corpus) and keeps the epoch that scored best there, so the number of passes is a
setting chosen on dev like every other, not fixed blind.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from reranker.errors import LexrerankError
from reranker.training import TrainingExample

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = [
    "DEV_METRIC",
    "EncoderTrainingOptions",
    "EncoderTrainingReport",
    "document_prompt",
    "finetune_encoder",
    "query_prompt",
    "self_supervised_pairs",
    "training_triples",
]


#: The dev score epoch selection maximises (the evaluator is named "dev").
DEV_METRIC = "eval_dev_cosine_mrr@10"


@dataclass
class EncoderTrainingOptions:
    """How the encoder is fine-tuned (recorded in the checkpoint's training section).

    Attributes:
        epochs: passes over the triples.
        batch_size: triples per step (in-batch negatives grow with it).
        lr: peak learning rate (linear warm-up over ``warmup_ratio`` of the steps, then decay).
        max_seq_length: tokens an article or query is cut to while training and serving.
        hard_negatives: BM25 negatives per query; each makes one triple.
        hard_depth: BM25 depth the hard negatives are drawn from (the top ones, in order).
        self_supervised: add caption -> article and sentence -> article pairs from the corpus.
        self_supervised_per_article: sentences per article used as anchors.
        freeze_embeddings: keep the word-embedding matrix fixed (see the module docstring).
        select_epoch_on_dev: evaluate the dev queries after each epoch and keep the best epoch
            (by :data:`DEV_METRIC`); ``epochs`` is then the most it trains.
        seed: seeds the sampling and the trainer.
    """

    epochs: int = 2
    batch_size: int = 16
    lr: float = 3e-5
    max_seq_length: int = 256
    hard_negatives: int = 1
    hard_depth: int = 10
    warmup_ratio: float = 0.1
    self_supervised: bool = False
    self_supervised_per_article: int = 1
    freeze_embeddings: bool = True
    select_epoch_on_dev: bool = False
    seed: int = 13


@dataclass
class EncoderTrainingReport:
    options: dict[str, Any]
    triples: int
    self_supervised_pairs: int
    steps: int
    seconds: float
    train_loss: float | None
    device: str
    base_encoder: str
    history: list[dict[str, float]] = field(default_factory=list)
    #: With ``select_epoch_on_dev``: the epoch kept and each epoch's dev MRR@10.
    chosen_epoch: int | None = None
    dev_mrr_by_epoch: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def query_prompt(model: SentenceTransformer) -> str:
    """The prompt the encoder expects before a query ("" when it has none)."""
    return model.prompts.get("query") or ""


def document_prompt(model: SentenceTransformer) -> str:
    """The prompt before a document: ``document``, ``passage`` or ``corpus``, as ST looks it up."""
    for name in ("document", "passage", "corpus"):
        if model.prompts.get(name):
            return cast(str, model.prompts[name])  # non-empty: checked on the line above
    return ""


def training_triples(examples: Sequence[TrainingExample], passages: Mapping[str, str],
                     hard_negatives: int = 1, hard_depth: int = 10, seed: int = 13
                     ) -> list[dict[str, str]]:
    """``{"anchor", "positive", "negative"}`` rows: one per (query, gold article, hard negative).

    Negatives are drawn without replacement from the query's top ``hard_depth`` BM25
    candidates (gold removed). A query without candidates gets a random corpus article.
    """
    rng = random.Random(seed)
    ids = sorted(passages)
    rows = []
    for ex in examples:
        gold = set(ex.positives)
        pool = [c for c in ex.candidates[:hard_depth] if c not in gold and c in passages]
        for positive in ex.positives:
            if positive not in passages:
                continue
            chosen = rng.sample(pool, min(hard_negatives, len(pool)))
            while len(chosen) < hard_negatives:
                d = ids[rng.randrange(len(ids))]
                if d not in gold and d not in chosen:
                    chosen.append(d)
            rows += [{"anchor": ex.query, "positive": passages[positive],
                      "negative": passages[n]} for n in chosen]
    return rows


def self_supervised_pairs(articles: Mapping[str, tuple[str, Sequence[str]]],
                          passages: Mapping[str, str], per_article: int = 1, seed: int = 13
                          ) -> list[dict[str, str]]:
    """Anchor -> article pairs made from the corpus alone (no labels).

    Args:
        articles: doc id -> (caption, sentences).
        passages: doc id -> the article's passage text (what the positive is).
        per_article: sentences of each article used as anchors (besides its caption).
    Returns:
        ``{"anchor", "positive"}`` rows.
    """
    rng = random.Random(seed)
    rows = []
    for doc_id in sorted(articles):
        caption, sentences = articles[doc_id]
        anchors = [caption.strip(" ()（）")] if caption and caption.strip(" ()（）") else []
        usable = [s for s in sentences if len(s.split()) >= 4 or len(s) >= 12]
        anchors += rng.sample(usable, min(per_article, len(usable)))
        rows += [{"anchor": a, "positive": passages[doc_id]} for a in anchors]
    return rows


def finetune_encoder(model: SentenceTransformer, examples: Sequence[TrainingExample],
                     passages: Mapping[str, str], options: EncoderTrainingOptions,
                     *, articles: Mapping[str, tuple[str, Sequence[str]]] | None = None,
                     dev: Sequence[TrainingExample] = (),
                     base_name: str = "", show_progress: bool = True
                     ) -> EncoderTrainingReport:
    """Fine-tune ``model`` in place on ``examples`` and return what happened.

    Args:
        model: a SentenceTransformer (float32; it is trained on its current device).
        examples: training queries with their gold ids and BM25 candidates (hard negatives).
        passages: doc id -> article passage text (caption + body) for every corpus article.
        options: see :class:`EncoderTrainingOptions`.
        articles: doc id -> (caption, sentences), needed for ``options.self_supervised``.
        dev: held-out queries (gold ids) that choose the epoch, needed for
            ``options.select_epoch_on_dev``; never trained on.
        base_name: the encoder's name, for the report.

    Raises:
        LexrerankError: no triples, or epoch selection without dev queries that have gold
            articles in the corpus.
    """
    triples, pairs = _training_data(examples, passages, options, articles)
    evaluator = _dev_evaluator(model, dev, passages) if options.select_epoch_on_dev else None
    started = time.perf_counter()
    _prepare_for_training(model, options)
    trainer, output = _run_trainer(model, triples, pairs, options, show_progress, evaluator)
    model.requires_grad_(False)
    model.eval()
    history = [{k: float(v) for k, v in entry.items() if isinstance(v, (int, float))}
               for entry in trainer.state.log_history]
    dev_scores = [entry[DEV_METRIC] for entry in history if DEV_METRIC in entry]
    chosen = (max(range(len(dev_scores)), key=lambda i: (dev_scores[i], -i)) + 1
              if dev_scores else None)
    return EncoderTrainingReport(
        options=asdict(options), triples=len(triples), self_supervised_pairs=len(pairs),
        steps=int(output.global_step), seconds=round(time.perf_counter() - started, 1),
        train_loss=float(output.training_loss) if output.training_loss is not None else None,
        device=str(model.device), base_encoder=base_name, history=history,
        chosen_epoch=chosen, dev_mrr_by_epoch=[round(v, 4) for v in dev_scores])


def _dev_evaluator(model: SentenceTransformer, dev: Sequence[TrainingExample],
                   passages: Mapping[str, str]) -> Any:
    """The dev queries ranked against the whole corpus, with the model's prompts."""
    from sentence_transformers.sentence_transformer.evaluation import (
        InformationRetrievalEvaluator,
    )

    keyed = {ex.qid or f"dev-{i}": ex for i, ex in enumerate(dev)}
    relevant = {qid: {d for d in ex.positives if d in passages} for qid, ex in keyed.items()}
    relevant = {qid: gold for qid, gold in relevant.items() if gold}
    if not relevant:
        raise LexrerankError("choosing the epoch on dev needs dev queries whose gold articles "
                             "are in the corpus")
    return InformationRetrievalEvaluator(
        queries={qid: keyed[qid].query for qid in relevant},
        corpus=dict(passages), relevant_docs=relevant, name="dev", write_csv=False,
        mrr_at_k=[10], ndcg_at_k=[10], accuracy_at_k=[1], precision_recall_at_k=[1],
        map_at_k=[10], query_prompt=query_prompt(model) or None,
        corpus_prompt=document_prompt(model) or None)


def _training_data(examples: Sequence[TrainingExample], passages: Mapping[str, str],
                   options: EncoderTrainingOptions,
                   articles: Mapping[str, tuple[str, Sequence[str]]] | None
                   ) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """The (query, positive, negative) triples and the self-supervised pairs (if asked)."""
    triples = training_triples(examples, passages, options.hard_negatives,
                               options.hard_depth, options.seed)
    if not triples:
        raise LexrerankError("no training triples: the queries' gold articles are not in the "
                             "corpus")
    pairs: list[dict[str, str]] = []
    if options.self_supervised:
        if articles is None:
            raise LexrerankError("self-supervised pairs need the articles' captions and "
                                 "sentences")
        pairs = self_supervised_pairs(articles, passages, options.self_supervised_per_article,
                                      options.seed)
    return triples, pairs


def _prepare_for_training(model: SentenceTransformer, options: EncoderTrainingOptions) -> None:
    """float32, trainable, the sequence length of the options, word embeddings frozen."""
    model.max_seq_length = options.max_seq_length
    if next(model.parameters()).dtype != torch.float32:
        model.float()  # fp16 training without loss scaling diverges
    model.requires_grad_(True)
    if options.freeze_embeddings:
        for embedding in _word_embeddings(model):
            embedding.requires_grad_(False)


def _run_trainer(model: SentenceTransformer, triples: list[dict[str, str]],
                 pairs: list[dict[str, str]], options: EncoderTrainingOptions,
                 show_progress: bool, evaluator: Any = None) -> tuple[Any, Any]:
    """Train with sentence-transformers' trainer (MNRL, no duplicates in a batch); returns
    the trainer and its output. With an ``evaluator`` every epoch is evaluated and saved
    (weights only) and the best one by :data:`DEV_METRIC` is loaded at the end."""
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    q_prompt, d_prompt = query_prompt(model), document_prompt(model)
    prompts = {"anchor": q_prompt, "positive": d_prompt, "negative": d_prompt}
    datasets: dict[str, Dataset] = {"queries": Dataset.from_list(triples)}
    losses: dict[str, Any] = {"queries": MultipleNegativesRankingLoss(model)}
    if pairs:
        datasets["corpus"] = Dataset.from_list(pairs)
        losses["corpus"] = losses["queries"]
    with tempfile.TemporaryDirectory(prefix="lexrerank-encoder-") as scratch:
        args = SentenceTransformerTrainingArguments(
            output_dir=scratch,
            num_train_epochs=options.epochs,
            per_device_train_batch_size=options.batch_size,
            learning_rate=options.lr,
            warmup_ratio=options.warmup_ratio,
            weight_decay=0.01,
            seed=options.seed,
            batch_sampler=BatchSamplers.NO_DUPLICATES,
            prompts=_column_prompts(prompts, list(datasets)),
            report_to="none",
            **_epoch_selection_args(evaluator is not None),
            logging_steps=10,
            disable_tqdm=not show_progress,
            use_cpu=not torch.cuda.is_available(),
            dataloader_num_workers=0,
        )
        train_set = datasets if len(datasets) > 1 else datasets["queries"]
        loss = losses if len(losses) > 1 else losses["queries"]
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train_set,
                                             loss=loss, evaluator=evaluator)
        # The trainer's progress callback writes its loss logs to stdout (tqdm.write), which
        # would corrupt `--json` output: training chatter belongs on stderr.
        with contextlib.redirect_stdout(sys.stderr):
            output = trainer.train()
    return trainer, output


def _epoch_selection_args(select: bool) -> dict[str, Any]:
    """Trainer arguments: evaluate and save each epoch, reload the best; or save nothing."""
    if not select:
        return {"save_strategy": "no"}
    return {"eval_strategy": "epoch", "save_strategy": "epoch", "save_only_model": True,
            "load_best_model_at_end": True, "metric_for_best_model": DEV_METRIC,
            "greater_is_better": True}


def _column_prompts(prompts: dict[str, str], dataset_names: list[str]
                    ) -> dict[str, Any] | None:
    """The trainer's ``prompts``: per column, nested per dataset when there are several."""
    if not any(prompts.values()):
        return None
    if len(dataset_names) == 1:
        return prompts
    return {name: prompts if name == "queries" else
            {"anchor": prompts["anchor"], "positive": prompts["positive"]}
            for name in dataset_names}


def _word_embeddings(model: SentenceTransformer) -> list[torch.nn.Module]:
    """The token-embedding tables of the model's transformer(s)."""
    found: list[torch.nn.Module] = []
    for module in model.modules():
        get = getattr(module, "get_input_embeddings", None)
        if callable(get) and isinstance(module, torch.nn.Module) and module is not model:
            table = get()
            if isinstance(table, torch.nn.Embedding) and table not in found:
                found.append(table)
    return found


def save_encoder(model: SentenceTransformer, out_dir: str | os.PathLike) -> Path:
    """Save a fine-tuned encoder as a SentenceTransformer directory (safetensors, no card)."""
    out = Path(out_dir)
    model.save(str(out), create_model_card=False, safe_serialization=True)
    return out
