"""The `lexrerank` command line (see DESIGN.md, "Command line")."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer
from opensearchpy.exceptions import ConnectionError as OSConnectionError
from opensearchpy.exceptions import RequestError as OSRequestError
from rich.console import Console
from rich.table import Table

from lexrerank.config import get_settings
from lexrerank.errors import LexrerankError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from opensearchpy import OpenSearch

    from lexrerank.bm25 import Hit
    from lexrerank.evaluation import QueryResult
    from reranker.cutoff import CutoffPolicy
    from reranker.datasets import Query
    from reranker.types import Reranker

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Statute search: BM25 first stage + attentive neural reranking.")
err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

# BM25's cut-off when no reranker is named, tuned for F2 on COLIEE H18..R03 with
#   lexrerank eval --queries ../shared/data/coliee/train/riteval_{H18..R03}_en.xml --tune-cutoff
BM25_CUTOFF = "ratio:0.84:5"

IndexOpt = Annotated[str | None, typer.Option("--index", help="Index name (default: statutes).")]
RerankerOpt = Annotated[str, typer.Option(
    help="none, default (the default model of the index's language), ensemble, paraformer, "
         "attentive-cnn, or a checkpoint directory.")]
WindowOpt = Annotated[int, typer.Option(min=1, max=1000, help="Rerank window.")]
ViaGatewayOpt = Annotated[str | None, typer.Option(
    "--via-gateway", metavar="[URL]",
    help="Go through the gateway (default URL: $LEXRERANK_GATEWAY_URL or "
         "http://127.0.0.1:8000): the whole serving pipeline.")]


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise SystemExit(2)


def expand_via_gateway(argv: list[str], default_url: str) -> list[str]:
    """``--via-gateway`` takes an optional URL: a bare flag gets ``default_url``.

    Only a following ``http(s)://`` word counts as the URL, so ``--via-gateway "some query"``
    keeps the query as the query.
    """
    out = []
    for i, word in enumerate(argv):
        out.append(word)
        if word == "--via-gateway":
            following = argv[i + 1] if i + 1 < len(argv) else ""
            if not following.startswith(("http://", "https://")):
                out.append(default_url)
    return out


def error_message(exc: Exception) -> str | None:
    """The one line the command line prints for a library error; None: not one of them.

    The only place that turns exceptions into messages: :class:`LexrerankError` (and its
    subclasses) carries its own; OpenSearch's 400s and unreachable clusters, and a rerank
    answer that does not fit the first stage (:class:`gateway.merge.MergeError`), are
    worded here. Anything else is a bug and keeps its traceback.
    """
    from gateway.merge import MergeError

    if isinstance(exc, LexrerankError):
        return str(exc)
    if isinstance(exc, OSRequestError):
        # A 400 from OpenSearch (e.g. a mapping the query does not fit): its reason, one line.
        return f"OpenSearch rejected the request ({exc.status_code} {exc.error})"
    if isinstance(exc, OSConnectionError):
        from lexrerank.opensearch_client import unreachable_message

        return unreachable_message(get_settings())
    if isinstance(exc, MergeError):
        return f"the rerank does not fit the first stage: {exc}"
    return None


def main() -> None:
    """Entry point: user-facing errors become one line and exit code 2, never a traceback."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        app(args=expand_via_gateway(sys.argv[1:], get_settings().gateway_url))
    except Exception as exc:  # noqa: BLE001 - mapped to one line, or re-raised as it was
        message = error_message(exc)
        if message is None:
            raise
        _fail(message)


@app.command()
def up(
    serve: Annotated[bool, typer.Option(
        "--serve", help="Also start one rerank worker and the gateway (127.0.0.1:8000).")]
    = False,
) -> None:
    """Start the local stack (OpenSearch, Redis) and wait until each answers."""
    from lexrerank import stack

    for name, state in stack.up(serve=serve).items():
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
    if not all(r.running for r in rows if r.required):
        raise typer.Exit(1)


@app.command()
def index(
    corpus: Annotated[Path, typer.Option(help="Corpus file (COLIEE civil code text or XML, "
                                              "ALQAC law.json or JSONL).")],
    fmt: Annotated[str | None, typer.Option(
        "--format", help="coliee | coliee-xml | alqac | jsonl (default: by file extension)")]
    = None,
    index_name: IndexOpt = None,
    language: Annotated[str | None, typer.Option(help="en | vi | ja (default: the format's)")]
    = None,
    vectors: Annotated[bool, typer.Option(
        "--vectors/--no-vectors",
        help="Also store the article vectors of the language's default reranker, so the "
             "index can be reranked as soon as this returns.")] = True,
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
    kept = (f", {report.unchanged} unchanged (not written: their vectors stay)"
            if report.unchanged else "")
    out.print(f"{verb} index {report.index!r}: {report.articles} articles, {report.indexed} "
              f"written{kept}, in {report.seconds:.1f}s ({lang})")
    if not vectors:
        return
    from reranker.registry import available_models

    if not available_models(lang, settings.model_dir):
        out.print(f"no reranker is trained for {lang} statutes: the index is searched with "
                  "BM25 only (train one: docs/training.md)")
        return
    # An index this run created serves nobody yet: expunging may close and reopen it.
    for line in embed_models(client, name, "default", serving=not report.created):
        out.print(line)


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="Query text (used as text, never as syntax).")],
    index_name: IndexOpt = None,
    reranker: RerankerOpt = "none",
    window: WindowOpt = 100,
    k: Annotated[int, typer.Option("--k", min=1, max=1000, help="Hits to show.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    via_gateway: ViaGatewayOpt = None,
) -> None:
    """Search the statute index, optionally reranking the top WINDOW hits."""
    settings = get_settings()
    name = index_name or settings.index
    if via_gateway:
        rows = _search_via_gateway(via_gateway, name, query, reranker, window, k)
    else:
        rows = _search_in_process(name, query, reranker, window, k)
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


def _search_via_gateway(url: str, index: str, query: str, reranker: str, window: int,
                        k: int) -> list[dict]:
    import httpx

    from lexrerank.gateway_client import (
        fallback_reason,
        gateway_search,
        rows_from_response,
        search_body,
    )

    if not query.strip():
        raise LexrerankError("the query is empty: give some text to search for")
    with httpx.Client(timeout=60) as http:
        resp = gateway_search(http, url, index,
                              search_body(query, k, reranker, window, None, explain=True),
                              rerank=reranker != "none")
    reason = fallback_reason(resp)
    if reason:
        err.print(f"[yellow]not reranked:[/] {reason}", highlight=False, soft_wrap=True)
    return rows_from_response(resp)


def _search_in_process(name: str, query: str, reranker: str, window: int, k: int
                       ) -> list[dict]:
    """The gateway's path without HTTP: BM25, the worker's rerank computation in this
    process, and the gateway's own window merge (:mod:`gateway.merge`)."""
    from gateway.merge import merge_fallback, merge_reranked, window_candidates
    from lexrerank.bm25 import bm25_response
    from lexrerank.gateway_client import rows_from_response
    from lexrerank.opensearch_client import opensearch_client

    client = opensearch_client(get_settings())
    if reranker == "none":
        return rows_from_response(merge_fallback(bm25_response(client, name, query, size=k),
                                                 0, k))
    response = bm25_response(client, name, query, size=max(k, window))
    from worker.rerank_service import RerankService

    service = RerankService.load(client, name, reranker)
    candidates = [(doc_id, score) for doc_id, score in window_candidates(response, window)]
    result = service.rerank(query, candidates)
    if result.query_truncated:
        err.print("note: the query is longer than the model reads; it was reranked on "
                  "its first part (BM25 used all of it)", highlight=False)
    merged = merge_reranked(response, result.to_dict(), window, 0, k, explain=True)
    return rows_from_response(merged)


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
    via_gateway: ViaGatewayOpt = None,
) -> None:
    """Evaluate the search path on query sets (macro F2/P/R, MRR, recall@k, latency)."""
    from reranker.cutoff import CutoffPolicy
    from reranker.datasets import read_query_set

    settings = get_settings()
    name = index_name or settings.index
    read = read_query_set(queries)
    query_set = read.queries
    if not query_set:
        raise LexrerankError("no query with gold articles in "
                             f"{', '.join(map(str, queries))}: nothing to evaluate")
    default_cutoff = CutoffPolicy.parse(BM25_CUTOFF)
    progress = not as_json and sys.stderr.isatty()
    if via_gateway:
        from lexrerank.gateway_client import run_queries_via_gateway

        if reranker != "none" and cutoff is None and not tune_cutoff:
            from reranker.checkpoint import read_config
            from reranker.registry import checkpoint_path

            # The model's tuned cut-off, from its checkpoint config (the model is not loaded).
            default_cutoff = CutoffPolicy.from_dict(
                read_config(checkpoint_path(reranker, _language_of(name),
                                            get_settings().model_dir)).get(
                    "cutoff", CutoffPolicy().to_dict()))
        results, model_version = run_queries_via_gateway(via_gateway, name, query_set,
                                                         reranker, window,
                                                         show_progress=progress)
    else:
        results, model_version, default_cutoff = _run_in_process(
            name, query_set, reranker, window, progress, not as_json, default_cutoff)
    _report_eval(results, query_set, reranker, model_version, default_cutoff, name, window,
                 cutoff, tune_cutoff, as_json, run_file, via_gateway, read.skipped)


def _language_of(index: str) -> str | None:
    from indexer.article_vectors import index_language
    from lexrerank.opensearch_client import opensearch_client

    return index_language(opensearch_client(get_settings()), index)


def _run_in_process(name: str, query_set: list[Query], reranker: str, window: int,
                    progress: bool, load_progress: bool, default_cutoff: CutoffPolicy
                    ) -> tuple[list[QueryResult], str | None, CutoffPolicy]:
    from lexrerank.evaluation import run_queries
    from lexrerank.opensearch_client import opensearch_client

    client = opensearch_client(get_settings())
    rerank_fn, model_version = None, None
    if reranker != "none":
        from worker.rerank_service import RerankService

        service = RerankService.load(client, name, reranker, show_progress=load_progress)
        model_version, default_cutoff = service.model_version, service.cutoff

        def rerank_fn(text: str, hits: Sequence[Hit]) -> list[tuple[str, float]]:
            result = service.rerank(text, [(h.doc_id, h.score) for h in hits])
            return [(h.doc_id, h.score) for h in result.hits]

    results = run_queries(client, name, query_set, rerank=rerank_fn, window=window,
                          show_progress=progress)
    return results, model_version, default_cutoff


def _report_eval(results: list[QueryResult], query_set: list[Query], reranker: str,
                 model_version: str | None, default_cutoff: CutoffPolicy, name: str,
                 window: int, cutoff: str | None, tune_cutoff: bool, as_json: bool,
                 run_file: Path | None, via_gateway: str | None,
                 skipped: tuple[str, ...] = ()) -> None:
    from lexrerank.evaluation import score_results, write_run_file
    from reranker.cutoff import CutoffPolicy
    from reranker.cutoff import tune_cutoff as choose_cutoff

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
              "window": window, "via_gateway": via_gateway,
              # COLIEE pairs with no gold article (e.g. R04-09-I) are left out, and said so.
              "skipped_no_gold": len(skipped), "skipped_ids": list(skipped)}
    if run_file:
        write_run_file(run_file, results, policy, tag=f"lexrerank-{reranker}")
    if as_json:
        print(json.dumps(report))
        return
    skipped_note = f" ({len(skipped)} without gold skipped)" if skipped else ""
    table = Table("metric", "value",
                  title=f"{len(query_set)} queries{skipped_note}, reranker {reranker}")
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
    model: Annotated[str, typer.Option(help="default (the index language's default model), "
                                            "ensemble, paraformer, attentive-cnn or a "
                                            "checkpoint directory.")] = "default",
) -> None:
    """Compute a model's article-side vectors and store them with the index (resumable).

    An ensemble stores the vectors of each of its members.
    """
    from lexrerank.opensearch_client import opensearch_client

    settings = get_settings()
    client = opensearch_client(settings)
    for line in embed_models(client, index_name or settings.index, model):
        out.print(line)


def embed_models(client: OpenSearch, index: str, model: str, show_progress: bool = True,
                 serving: bool = True) -> list[str]:
    """Store the vectors of ``model`` (each member of an ensemble) for the index's language.

    Members on the same encoder (the dense model and the Paraformer) load it once. When any
    vectors were stored, the deleted copies the updates left are merged away once at the
    end (:func:`indexer.article_vectors.expunge_deleted_copies`; ``serving`` says whether
    the index may be closed for it).
    """
    from indexer.article_vectors import embed_index, expunge_deleted_copies, index_language
    from reranker.checkpoint import check_language, load_reranker
    from reranker.registry import checkpoint_path, member_names

    language = index_language(client, index)
    settings = get_settings()
    lines: list[str] = []
    encoders: dict = {}  # load_reranker's cache of loaded encoders
    computed = 0
    for name in member_names(model, language, settings.model_dir):
        loaded = load_reranker(checkpoint_path(name, language, settings.model_dir),
                               encoders=encoders, cache_dir=settings.cache_dir,
                               backend=settings.encoder_backend)
        check_language(loaded.checkpoint_config, name, index, language)
        # A single model: member_names names an ensemble's members, never an ensemble (which
        # load_reranker refuses as a member); not checked here.
        report = embed_index(client, index, cast("Reranker", loaded),
                             show_progress=show_progress)
        lines.append(f"{report.index}: vectors of {loaded.kind} {report.model_version} for "
                     f"{report.total} articles ({report.computed} computed, {report.skipped} "
                     f"already there) in {report.seconds:.1f}s")
        computed += report.computed
    if computed:
        left = expunge_deleted_copies(client, index, serving=serving)
        lines.append(f"{index}: merged away the copies the updates replaced"
                     + (f" ({left} still held by a retention lease)" if left else ""))
    return lines


def _register_reindex() -> None:
    # `lexrerank reindex` / `lexrerank rollback` live in their own module.
    from lexrerank.reindex_cli import register

    register(app)


_register_reindex()


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    workers: Annotated[int, typer.Option("--workers", min=1,
                                         help="uvicorn worker processes.")] = 1,
    log_level: Annotated[str, typer.Option(help="debug | info | warning")] = "info",
) -> None:
    """Run the OpenSearch-compatible gateway (reranks `_search` with search_pipeline=lexrerank)."""
    import uvicorn

    if workers > 1 or get_settings().prometheus_multiproc_dir:
        from lexrerank.prometheus_dir import prepare_multiproc_dir

        prepare_multiproc_dir("gateway")  # /metrics merges the uvicorn workers' values
    # access_log off: the gateway writes its own JSON line per request, with the request id.
    # The protocol is uvicorn's httptools one plus the LEXRERANK_MAX_HEADER_BYTES, _HEADER_READ_MS,
    # _BODY_READ_MS and _CONNECTIONS limits (gateway/http_protocol.py).
    uvicorn.run("gateway.app:create_app", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, access_log=False,
                http="gateway.http_protocol:GatewayHttpProtocol")


POOLS = ("prefork", "solo", "threads")


@app.command()
def worker(
    queues: Annotated[str | None, typer.Option(
        help="Comma-separated queues (default: rerank,embed as configured by "
             "LEXRERANK_RERANK_QUEUE / LEXRERANK_EMBED_QUEUE).")] = None,
    concurrency: Annotated[int | None, typer.Option(
        min=1, help="Processes (default: one per GPU; on CPU one per core, at most 4).")]
    = None,
    pool: Annotated[str, typer.Option(help="prefork | solo | threads")] = "prefork",
    hostname: Annotated[str, typer.Option(help="Celery node name.")] = "lexrerank@%h",
    preload: Annotated[bool, typer.Option(
        help="Load LEXRERANK_MODEL and the vectors of LEXRERANK_INDEX at start-up.")] = True,
    threads: Annotated[int | None, typer.Option(
        min=1, help="torch threads per process (default: $LEXRERANK_TORCH_THREADS, else 1; "
                    "use --concurrency, not threads, to use more cores).")] = None,
    loglevel: Annotated[str, typer.Option(help="debug | info | warning")] = "info",
) -> None:
    """Run a Celery worker for the rerank (latency) and embed (batch) queues."""
    if pool not in POOLS:
        raise LexrerankError(f"unknown pool {pool!r}: use one of {', '.join(POOLS)}")
    from worker.device import THREADS_ENV, default_processes

    settings = get_settings()
    names = queues or f"{settings.rerank_queue},{settings.embed_queue}"
    if preload:
        os.environ["LEXRERANK_WORKER_PRELOAD"] = "1"  # read by worker.tasks in the child
    from lexrerank.prometheus_dir import prepare_multiproc_dir

    prepare_multiproc_dir("worker")  # before prometheus_client loads: children's metrics
    from worker.celery_app import app as celery_app

    # One process per GPU (each holds a model); on CPU one per core (one torch thread each).
    processes = concurrency or default_processes()
    if threads:
        os.environ[THREADS_ENV] = str(threads)  # applied by worker.tasks in each child
    celery_app.worker_main(["worker", "--queues", names, "--concurrency", str(processes),
                            "--pool", pool, "--hostname", hostname, "--loglevel", loglevel,
                            "--without-gossip", "--without-mingle"])


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


def _register_bench() -> None:
    from bench.cli import bench_app

    app.add_typer(bench_app, name="bench")


_register_bench()


if __name__ == "__main__":  # pragma: no cover
    main()
