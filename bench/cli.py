"""`lexrerank bench SUITE [--json]`: one Typer command per benchmark suite.

Each suite is a module of this package with a ``run(**options) -> dict`` that returns its
figures; the command prints them as one JSON object (``--json``) or as a table. Suites are
run by hand, never by the test run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (run by hand; figures in JSON).")
out = Console(soft_wrap=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
WindowOpt = Annotated[int, typer.Option(min=1, max=1000, help="Rerank window.")]
QueriesOpt = Annotated[int, typer.Option(min=1, help="Queries to time.")]
ModelOpt = Annotated[str, typer.Option(
    help="default (the index language's default), ensemble, paraformer, attentive-cnn or a "
         "checkpoint.")]
IndexOpt = Annotated[str | None, typer.Option("--index", help="Index name (default: statutes).")]


def report(suite: str, result: dict[str, Any], as_json: bool) -> None:
    """Print ``result`` as one JSON line, or as a two-column table (nested keys dotted)."""
    if as_json:
        print(json.dumps(result))
        return
    table = Table("figure", "value", title=f"bench {suite}")
    for key, value in _flatten(result):
        table.add_row(key, str(value))
    out.print(table)


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        rows: list[tuple[str, Any]] = []
        for key, inner in value.items():
            rows += _flatten(inner, f"{prefix}{key}.")
        return rows
    return [(prefix.rstrip("."), value)]


@bench_app.command()
def rerank(as_json: JsonOpt = False, window: WindowOpt = 100, queries: QueriesOpt = 200,
           model: ModelOpt = "default", index_name: IndexOpt = None) -> None:
    """One rerank with precomputed article vectors vs the published algorithm."""
    from bench import rerank as suite

    report("rerank", suite.run(window=window, queries=queries, model=model, index=index_name),
           as_json)


@bench_app.command("query-batching")
def query_batching(
    as_json: JsonOpt = False, group: Annotated[int, typer.Option(
        min=2, help="Concurrent queries one batch would hold.")] = 8,
    queries: QueriesOpt = 96, model: ModelOpt = "default",
) -> None:
    """Encoding a group of queries as one batch vs one by one, per encoder backend (does a
    batching queue on the worker pay?)."""
    from bench import query_batching as suite

    report("query-batching", suite.run(group=group, queries=queries, model=model), as_json)


@bench_app.command("encoder-runtimes")
def encoder_runtimes(
    as_json: JsonOpt = False, queries: QueriesOpt = 150, model: ModelOpt = "default",
    index_name: IndexOpt = None,
    candidates: Annotated[str, typer.Option(
        help="Comma list of: torch, onnx, onnx-int8, onnx-int8-ffn, onnx-int8-weights, "
             "openvino, openvino-int8 (the last three need pip install -e '.[runtimes]').")]
    = "torch,onnx,onnx-int8,onnx-int8-ffn,onnx-int8-weights,openvino,openvino-int8",
) -> None:
    """Every CPU runtime and quantisation tried for the query encoder, at one thread, side by
    side: speed against torch fp32, embedding fidelity, batch dependence, GMAC/s."""
    from bench import encoder_runtimes as suite

    report("encoder-runtimes", suite.run(queries=queries, model=model, index=index_name,
                                         candidates=_runtime_candidates(candidates)), as_json)


def _runtime_candidates(value: str) -> tuple[str, ...]:
    """The comma list of ``--candidates``: known ones, torch (the reference) among them."""
    from bench.encoder_runtimes import CANDIDATES

    chosen = tuple(dict.fromkeys(c.strip() for c in value.split(",") if c.strip()))
    unknown = sorted(set(chosen) - set(CANDIDATES))
    if unknown or "torch" not in chosen:
        missing = f"unknown {', '.join(unknown)}" if unknown else "torch missing"
        raise typer.BadParameter(f"{missing}: give torch (the reference) and any of "
                                 f"{', '.join(CANDIDATES[1:])}", param_hint="--candidates")
    return chosen


@bench_app.command()
def pipeline(as_json: JsonOpt = False, window: WindowOpt = 100, queries: QueriesOpt = 200,
             model: ModelOpt = "default", index_name: IndexOpt = None,
             worker_processes: Annotated[int | None, typer.Option(
                 min=1, help="Processes of the bench's rerank worker (default: as "
                             "`lexrerank worker`: one per GPU, else one per core, at most 4)."
             )] = None) -> None:
    """Latency of BM25 direct, BM25 through the gateway, and the reranked path through the
    gateway and through the search-pipeline plugin (c1, c8)."""
    from bench import pipeline as suite

    report("pipeline", suite.run(window=window, queries=queries, model=model, index=index_name,
                                 worker_processes=worker_processes), as_json)


@bench_app.command("reindex")
def reindex_suite(
    as_json: JsonOpt = False,
    articles: Annotated[int, typer.Option(min=1, help="Articles in the generated corpus.")]
    = 100_000,
    model: ModelOpt = "default",
    chunk_size: Annotated[int, typer.Option(min=1, help="Articles per embed task.")] = 200,
    concurrency: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    keep_index: Annotated[bool, typer.Option(help="Keep the bench index afterwards.")] = False,
) -> None:
    """A reindex job on a generated scale corpus: bulk docs/s, embed vs bare encode, memory."""
    from bench import reindex as suite

    report("reindex", suite.run(articles=articles, model=model, chunk_size=chunk_size,
                                concurrency=concurrency, keep_index=keep_index), as_json)


@bench_app.command("scale")
def scale_suite(
    as_json: JsonOpt = False,
    articles: Annotated[str, typer.Option(
        help="Comma list of index sizes; the first is the baseline of the ratios.")]
    = "768,10000,100000,200000",
    model: ModelOpt = "default",
    cache_mb: Annotated[int, typer.Option(
        min=1, help="LEXRERANK_VECTOR_CACHE_MB of the bench worker.")] = 256,
    queries: QueriesOpt = 50, window: WindowOpt = 100,
    keep_index: Annotated[bool, typer.Option(help="Keep the bench indexes afterwards.")]
    = False,
) -> None:
    """Worker RSS, first answer, cold/warm rerank and the cost of adding one article, per
    index size (synthetic corpus and vectors; each index deleted after its run)."""
    from bench import scale as suite

    try:
        sizes = tuple(int(n) for n in articles.split(",") if n.strip())
    except ValueError:
        raise typer.BadParameter("give sizes as a comma list of integers, e.g. 768,10000",
                                 param_hint="--articles") from None
    if not sizes or min(sizes) < 100:
        raise typer.BadParameter("each size must be at least 100 articles (a window)",
                                 param_hint="--articles")
    report("scale", suite.run(articles=sizes, model=model, cache_mb=cache_mb,
                              queries=queries, window=window, keep_index=keep_index), as_json)


@bench_app.command()
def load(
    as_json: JsonOpt = False,
    concurrency: Annotated[str, typer.Option(help="Comma list of client counts.")]
    = "1,4,16,32",
    queries: QueriesOpt = 200, window: WindowOpt = 100, model: ModelOpt = "default",
    index_name: IndexOpt = None,
    timeout_ms: Annotated[int | None, typer.Option(
        min=1, help="Rerank deadline (default: LEXRERANK_RERANK_TIMEOUT_MS).")] = None,
    encoder_backends: Annotated[str, typer.Option(
        help="Comma list of encoder runtimes (torch, onnx, onnx-int8) to measure side by side "
             "with LEXRERANK_ENCODER_BACKEND, each on its own worker; the index must hold "
             "their vectors.")] = "",
) -> None:
    """Throughput, p50/p95/p99, errors, fallbacks: BM25 and reranked, at several concurrencies.

    BM25 is timed straight to OpenSearch and through the gateway (its overhead shows).
    """
    from bench import load as suite

    levels = tuple(int(c) for c in concurrency.split(",") if c.strip())
    backends = _encoder_backends(encoder_backends)
    report("load", suite.run(concurrency=levels, queries=queries, window=window, model=model,
                             index=index_name, timeout_ms=timeout_ms,
                             encoder_backends=backends), as_json)


def _encoder_backends(value: str) -> tuple[str, ...]:
    """The comma list of ``--encoder-backends``, each a known runtime."""
    from reranker.model_names import ENCODER_BACKENDS

    backends = tuple(b.strip() for b in value.split(",") if b.strip())
    unknown = sorted(set(backends) - set(ENCODER_BACKENDS))
    if unknown:
        raise typer.BadParameter(f"unknown encoder backend(s) {', '.join(unknown)}: use "
                                 f"{', '.join(ENCODER_BACKENDS)}", param_hint="--encoder-backends")
    return backends


@bench_app.command()
def faults(
    as_json: JsonOpt = False,
    quick: Annotated[bool, typer.Option("--quick", help="Short phases (seconds each).")]
    = False,
    only: Annotated[str | None, typer.Option(
        "--only", help="Comma list: worker_kill, redis_stop, worker_slow, opensearch_stop, "
                       "reindex_kill, hostile_mix (default: all).")] = None,
    model: ModelOpt = "default", index_name: IndexOpt = None,
    timeout_ms: Annotated[int | None, typer.Option(
        min=1, help="Rerank deadline (default: LEXRERANK_RERANK_TIMEOUT_MS).")] = None,
    hostile_seconds: Annotated[float | None, typer.Option(
        min=1, help="Length of hostile_mix (default: 60 s, 15 s with --quick).")] = None,
) -> None:
    """Faults under a steady load: 5xx, fallbacks, p95, recovery, documents lost.

    Worker kill, Redis stop, slow worker, OpenSearch stop and reindex kill, each against
    private processes behind a private gateway; hostile_mix: 4 clients mixing valid, invalid
    and hostile requests (hung requests, unexpected 5xx).
    """
    from bench import faults as suite

    chosen = tuple(f.strip() for f in only.split(",") if f.strip()) if only else suite.FAULTS
    report("faults", suite.run(quick=quick, faults=chosen, model=model, index=index_name,
                               timeout_ms=timeout_ms, hostile_s=hostile_seconds), as_json)


@bench_app.command()
def quality(
    as_json: JsonOpt = False,
    datasets: Annotated[str, typer.Option(
        help="Comma list: coliee_en, coliee_ja (rolling origin over COLIEE years; Japanese "
             "reads index statutes-ja), alqac_vi (k-fold cross-validation).")]
    = "coliee_en,coliee_ja,alqac_vi",
    encoder_backends: Annotated[str, typer.Option(
        help="Comma list of encoder runtimes to score COLIEE's trained folds with: torch, "
             "onnx, onnx-int8 (the quality cost of a CPU backend, side by side: with the "
             "settings torch chose, and re-tuned on dev with the backend's scores).")]
    = "torch",
) -> None:
    """Every quality figure of the README: BM25 vs each reranker, no setting chosen on the
    data it is reported on (COLIEE rolling origin). Trains each fold's models on first use
    (cached in <LEXRERANK_CACHE>/quality)."""
    from bench import quality as suite

    chosen = tuple(d.strip() for d in datasets.split(",") if d.strip())
    backends = _encoder_backends(encoder_backends)
    report("quality", suite.run(datasets=chosen, encoder_backends=backends), as_json)


@bench_app.command()
def release(
    as_json: JsonOpt = False,
    language: Annotated[str, typer.Option(help="Corpus language: en, ja or vi.")] = "en",
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="Where to write (default: reranker/weights/<language>).")] = None,
    index_name: IndexOpt = None,
) -> None:
    """Build the shipped weights of a language: the quality protocol's release fold (trained
    on all years but the last, settings chosen on the last)."""
    from bench import release as suite

    report("release", suite.build(language=language, out=out_dir,
                                  index=index_name), as_json)


@bench_app.command("japanese-bm25")
def japanese_bm25(as_json: JsonOpt = False) -> None:
    """The Japanese first stage's analysis chain (kuromoji, character bigrams, both), chosen
    by rolling origin over the COLIEE Japanese years (scratch index, deleted afterwards)."""
    from bench import japanese_bm25 as suite

    report("japanese-bm25", suite.run(), as_json)


@bench_app.command()
def encoders(as_json: JsonOpt = False) -> None:
    """Each packaged encoder, frozen, ranking the BM25 windows of each language's queries
    (MRR, recall@k): which encoder reads which language before any training."""
    from bench import encoders as suite

    report("encoders", suite.run(), as_json)
