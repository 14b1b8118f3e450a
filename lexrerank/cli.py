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
    reranker: Annotated[str, typer.Option(help="none (more arrive with the rerankers)")]
    = "none",
    k: Annotated[int, typer.Option("--k", min=1, max=1000, help="Hits to show.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Search the statute index."""
    from gateway.first_stage import search_bm25
    from lexrerank.opensearch_client import opensearch_client

    if reranker != "none":
        raise LexrerankError(f"unknown reranker {reranker!r}; available: none")
    settings = get_settings()
    hits = search_bm25(opensearch_client(settings), index_name or settings.index, query, size=k)
    if as_json:
        print(json.dumps([{"rank": i, "doc_id": h.doc_id, "score": h.score,
                           "caption": h.source.get("caption"), "text": h.source.get("text")}
                          for i, h in enumerate(hits, start=1)], ensure_ascii=False))
        return
    for i, h in enumerate(hits, start=1):
        caption = f" {h.source['caption']}" if h.source.get("caption") else ""
        out.print(f"[bold]{i:>3}. {h.doc_id}[/]{caption}  [dim]{h.score:.3f}[/]")
        out.print(f"     {h.source.get('text', '')[:200]}", highlight=False)


@app.command("eval")
def evaluate(
    queries: Annotated[list[Path], typer.Option(help="COLIEE XML or ALQAC JSON; repeatable.")],
    index_name: IndexOpt = None,
    reranker: Annotated[str, typer.Option(help="none")] = "none",
    window: Annotated[int, typer.Option(min=1, max=1000, help="Rerank window.")] = 100,
    cutoff: Annotated[str | None, typer.Option(
        help="Articles returned per query: top_k:N, ratio:V[:MAX] or margin:V[:MAX] "
             f"(default for BM25: {BM25_CUTOFF}).")] = None,
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

    if reranker != "none":
        raise LexrerankError(f"unknown reranker {reranker!r}; available: none")
    settings = get_settings()
    query_set = read_queries(queries)
    client = opensearch_client(settings)
    results = run_queries(client, index_name or settings.index, query_set, window=window,
                          show_progress=not as_json and sys.stderr.isatty())
    if tune_cutoff:
        rankings = [([d for d, _ in r.ranking], [s for _, s in r.ranking]) for r in results]
        by_qid = {q.qid: q.gold for q in query_set}
        policy, _ = choose_cutoff(rankings, [by_qid[r.qid] for r in results], kind="ratio")
    else:
        try:
            policy = CutoffPolicy.parse(cutoff or BM25_CUTOFF)
        except ValueError as exc:
            raise LexrerankError(str(exc)) from exc
    metrics = score_results(results, query_set, policy)
    report = {**metrics, "reranker": reranker, "model_version": None,
              "index": index_name or settings.index}
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


if __name__ == "__main__":  # pragma: no cover
    main()
