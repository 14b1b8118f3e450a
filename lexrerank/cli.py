"""The `lexrerank` command line (see DESIGN.md, "Command line")."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from opensearchpy.exceptions import ConnectionError as OSConnectionError
from rich.console import Console
from rich.table import Table

from lexrerank.config import get_settings
from lexrerank.errors import LexrerankError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Statute search: BM25 first stage + attentive neural reranking.")
err = Console(stderr=True)
out = Console()

# BM25's cut-off when no reranker is named, tuned for F2 on COLIEE H18..R03 with
#   lexrerank eval --queries ../shared/data/coliee/train/riteval_{H18..R03}_en.xml --tune-cutoff
BM25_CUTOFF = "ratio:0.84:5"

IndexOpt = Annotated[str | None, typer.Option("--index", help="Index name (default: statutes).")]
RerankerOpt = Annotated[str, typer.Option(
    help="none, paraformer, attentive-cnn, or a checkpoint directory.")]
WindowOpt = Annotated[int, typer.Option(min=1, max=1000, help="Rerank window.")]


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise SystemExit(2)


def main() -> None:
    """Entry point: user-facing errors become one line and exit code 2, never a traceback."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        app()
    except LexrerankError as exc:
        _fail(str(exc))
    except OSConnectionError:
        from lexrerank.opensearch_client import unreachable_message

        _fail(unreachable_message(get_settings()))


@app.command()
def up() -> None:
    """Start the local stack (OpenSearch, Redis) and wait until each answers."""
    from lexrerank import stack

    for name, state in stack.up().items():
        out.print(f"{name:<11} {state}")


@app.command()
def down() -> None:
    """Stop the services that `lexrerank up` started on this machine."""
    from lexrerank import stack

    for name, state in stack.down().items():
        out.print(f"{name:<11} {state}")


@app.command()
def status() -> None:
    """Show what runs where and what is missing."""
    from lexrerank import stack

    table = Table("service", "url", "state", "started here")
    rows = stack.status()
    for row in rows:
        table.add_row(row.name, row.url, row.detail, "yes" if row.managed else "no")
    out.print(table)
    if not all(r.running for r in rows):
        raise typer.Exit(1)


@app.command()
def index(
    corpus: Annotated[Path, typer.Option(help="Corpus file (COLIEE civil code, ALQAC law.json "
                                              "or JSONL).")],
    fmt: Annotated[str | None, typer.Option("--format", help="coliee | alqac | jsonl "
                                                             "(default: by file extension)")]
    = None,
    index_name: IndexOpt = None,
    language: Annotated[str | None, typer.Option(help="en | vi | ja (default: the format's)")]
    = None,
) -> None:
    """Parse a corpus and bulk-load it into an index (idempotent: stable ids)."""
    from indexer.bulk_load import load_articles
    from indexer.parsers import parse_corpus
    from lexrerank.opensearch_client import opensearch_client

    settings = get_settings()
    name = index_name or settings.index
    first = next(iter(parse_corpus(corpus, fmt, language)), None)
    lang = language or (first.language if first else "en")
    client = opensearch_client(settings)
    report = load_articles(client, name, lambda: parse_corpus(corpus, fmt, language), lang)
    verb = "created" if report.created else "updated"
    out.print(f"{verb} index {report.index!r}: {report.indexed} articles in "
              f"{report.seconds:.1f}s ({lang})")


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="Query text (used as text, never as syntax).")],
    index_name: IndexOpt = None,
    reranker: RerankerOpt = "none",
    window: WindowOpt = 100,
    k: Annotated[int, typer.Option("--k", min=1, max=1000, help="Hits to show.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Search the statute index, optionally reranking the top WINDOW hits."""
    from gateway.first_stage import search_bm25
    from lexrerank.opensearch_client import opensearch_client

    settings = get_settings()
    name = index_name or settings.index
    client = opensearch_client(settings)
    hits = search_bm25(client, name, query, size=max(k, window if reranker != "none" else k))
    rows = [{"rank": i, "doc_id": h.doc_id, "score": h.score, "caption": h.source.get("caption"),
             "text": h.source.get("text")} for i, h in enumerate(hits, start=1)]
    if reranker != "none":
        from worker.rerank_service import RerankService

        service = RerankService.load(client, name, reranker)
        by_id = {r["doc_id"]: r for r in rows}
        result = service.rerank(query, [(h.doc_id, h.score) for h in hits[:window]])
        reranked = [{**by_id[h.doc_id], "rank": i, "score": h.score,
                     "first_stage_rank": h.first_stage_rank, "model_score": h.model_score,
                     "evidence": h.evidence} for i, h in enumerate(result.hits, start=1)]
        rows = reranked + [{**r, "rank": len(reranked) + j}
                           for j, r in enumerate(rows[window:], start=1)]
    rows = rows[:k]
    if as_json:
        print(json.dumps(rows, ensure_ascii=False))
        return
    for row in rows:
        caption = f" {row['caption']}" if row.get("caption") else ""
        moved = (f"  [dim](BM25 #{row['first_stage_rank']})[/]"
                 if "first_stage_rank" in row else "")
        out.print(f"[bold]{row['rank']:>3}. {row['doc_id']}[/]{caption}  "
                  f"[dim]{row['score']:.3f}[/]{moved}")
        out.print(f"     {(row.get('text') or '')[:200]}", highlight=False)


@app.command("eval")
def evaluate(
    queries: Annotated[list[Path], typer.Option(help="COLIEE XML or ALQAC JSON; repeatable.")],
    index_name: IndexOpt = None,
    reranker: RerankerOpt = "none",
    window: WindowOpt = 100,
    cutoff: Annotated[str | None, typer.Option(
        help="Articles returned per query: top_k:N, ratio:V[:MAX] or margin:V[:MAX] "
             f"(default: the model's tuned one; for BM25 {BM25_CUTOFF}).")] = None,
    tune_cutoff: Annotated[bool, typer.Option(
        help="Choose the cut-off that maximises F2 on these queries (dev data only).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    run_file: Annotated[Path | None, typer.Option(help="Write a COLIEE/TREC run file.")] = None,
) -> None:
    """Evaluate the search path on query sets (macro F2/P/R, MRR, recall@k, latency)."""
    from lexrerank.evaluation import run_queries, score_results, write_run_file
    from lexrerank.opensearch_client import opensearch_client
    from reranker.cutoff import CutoffPolicy
    from reranker.cutoff import tune_cutoff as choose_cutoff
    from reranker.datasets import read_queries

    settings = get_settings()
    name = index_name or settings.index
    query_set = read_queries(queries)
    client = opensearch_client(settings)
    rerank_fn, model_version, default_cutoff = None, None, CutoffPolicy.parse(BM25_CUTOFF)
    if reranker != "none":
        from worker.rerank_service import RerankService

        service = RerankService.load(client, name, reranker, show_progress=not as_json)
        model_version, default_cutoff = service.model_version, service.cutoff

        def rerank_fn(text: str, hits: list) -> list[tuple[str, float]]:
            result = service.rerank(text, [(h.doc_id, h.score) for h in hits])
            return [(h.doc_id, h.score) for h in result.hits]

    results = run_queries(client, name, query_set, rerank=rerank_fn, window=window,
                          show_progress=not as_json and sys.stderr.isatty())
    if tune_cutoff:
        rankings = [([d for d, _ in r.ranking], [s for _, s in r.ranking]) for r in results]
        by_qid = {q.qid: q.gold for q in query_set}
        policy, _ = choose_cutoff(rankings, [by_qid[r.qid] for r in results],
                                  kind="ratio" if reranker == "none" else "margin")
    else:
        try:
            policy = CutoffPolicy.parse(cutoff) if cutoff else default_cutoff
        except ValueError as exc:
            raise LexrerankError(str(exc)) from exc
    metrics = score_results(results, query_set, policy)
    report = {**metrics, "reranker": reranker, "model_version": model_version, "index": name,
              "window": window}
    if run_file:
        write_run_file(run_file, results, policy, tag=f"lexrerank-{reranker}")
    if as_json:
        print(json.dumps(report))
        return
    table = Table("metric", "value", title=f"{len(query_set)} queries, reranker {reranker}")
    for key in ("f2", "precision", "recall", "mrr", "recall@1", "recall@5", "recall@10",
                "recall@100"):
        table.add_row(key, f"{report[key]:.4f}")
    table.add_row("cut-off", report["cutoff"])
    table.add_row("latency p50/p95 ms",
                  f"{report['latency_ms']['p50']:.1f} / {report['latency_ms']['p95']:.1f}")
    out.print(table)


@app.command()
def embed(
    index_name: IndexOpt = None,
    model: Annotated[str, typer.Option(help="paraformer, attentive-cnn or a checkpoint "
                                            "directory.")] = "paraformer",
) -> None:
    """Compute a model's article-side vectors and store them with the index (resumable)."""
    from indexer.article_vectors import embed_index
    from lexrerank.opensearch_client import opensearch_client
    from reranker.checkpoint import load_reranker
    from reranker.registry import checkpoint_path

    settings = get_settings()
    loaded = load_reranker(checkpoint_path(model))
    report = embed_index(opensearch_client(settings), index_name or settings.index, loaded)
    out.print(f"{report.index}: vectors of {loaded.kind} {report.model_version} for "
              f"{report.total} articles ({report.computed} computed, {report.skipped} already "
              f"there) in {report.seconds:.1f}s")


@app.command()
def train(
    model: Annotated[str, typer.Option(help="paraformer | attentive-cnn")],
    queries: Annotated[list[Path], typer.Option(help="Training queries; repeatable.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Checkpoint directory to write.")],
    dev: Annotated[list[Path] | None, typer.Option(
        help="Dev queries (early stopping, fusion and cut-off tuning); repeatable.")] = None,
    settings_from: Annotated[Path | None, typer.Option(
        help="Reuse fusion and cut-off tuned in this checkpoint (when training on all data).")]
    = None,
    index_name: IndexOpt = None,
    epochs: Annotated[int, typer.Option(min=1)] = 10,
    lr: Annotated[float, typer.Option()] = 1e-3,
    batch_size: Annotated[int, typer.Option(min=1)] = 16,
    negatives: Annotated[int, typer.Option(min=1, help="Negatives per query.")] = 15,
    loss: Annotated[str, typer.Option(help="listwise | pairwise")] = "listwise",
    seed: Annotated[int, typer.Option()] = 13,
    patience: Annotated[int, typer.Option(min=1)] = 3,
    finetune_encoder: Annotated[bool, typer.Option(
        help="Paraformer: fine-tune the sentence encoder too (for a GPU).")] = False,
    encoder: Annotated[str | None, typer.Option(
        help="SentenceTransformer directory (default: all-MiniLM-L6-v2).")] = None,
) -> None:
    """Train a reranker on query sets with hard negatives from the BM25 index."""
    from lexrerank.opensearch_client import opensearch_client
    from lexrerank.training_job import TrainOptions
    from lexrerank.training_job import train as run_training
    from reranker.datasets import read_queries

    settings = get_settings()
    options = TrainOptions(model=model, epochs=epochs, lr=lr, batch_size=batch_size,
                           negatives=negatives, loss=loss, seed=seed, patience=patience,
                           finetune_encoder=finetune_encoder, encoder=encoder)
    dev_files = list(dev or [])
    summary = run_training(opensearch_client(settings), index_name or settings.index, options,
                           queries, read_queries(queries), dev_files,
                           read_queries(dev_files) if dev_files else [], out_dir,
                           settings_from=settings_from)
    print(json.dumps(summary))


BENCH_SUITES = ("rerank",)


@app.command()
def bench(
    suite: Annotated[str, typer.Argument(help="rerank")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    window: WindowOpt = 100,
    queries: Annotated[int, typer.Option(min=1, help="Queries to time.")] = 200,
    model: Annotated[str, typer.Option(help="paraformer, attentive-cnn or a checkpoint.")]
    = "paraformer",
    index_name: IndexOpt = None,
) -> None:
    """Run a benchmark suite on this machine and print its figures."""
    if suite not in BENCH_SUITES:
        raise LexrerankError(f"unknown suite {suite!r}; available: {', '.join(BENCH_SUITES)}")
    from bench import rerank as rerank_bench

    result = rerank_bench.run(window=window, queries=queries, model=model, index=index_name)
    if as_json:
        print(json.dumps(result))
        return
    table = Table("figure", "value", title=f"bench {suite}")
    for key, value in result.items():
        table.add_row(key, str(value))
    out.print(table)


if __name__ == "__main__":  # pragma: no cover
    main()
