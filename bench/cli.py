"""`lexrerank bench SUITE [--json]`: one Typer command per benchmark suite.

Each suite is a module of this package with a ``run(**options) -> dict`` that returns its
figures; the command prints them as one JSON object (``--json``) or as a table. Suites are
run by hand, never by the test run.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (run by hand; figures in JSON).")
out = Console(soft_wrap=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
WindowOpt = Annotated[int, typer.Option(min=1, max=1000, help="Rerank window.")]
QueriesOpt = Annotated[int, typer.Option(min=1, help="Queries to time.")]
ModelOpt = Annotated[str, typer.Option(help="paraformer, attentive-cnn or a checkpoint.")]
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
           model: ModelOpt = "paraformer", index_name: IndexOpt = None) -> None:
    """One rerank with precomputed article vectors vs the published algorithm."""
    from bench import rerank as suite

    report("rerank", suite.run(window=window, queries=queries, model=model, index=index_name),
           as_json)


@bench_app.command()
def pipeline(as_json: JsonOpt = False, window: WindowOpt = 100, queries: QueriesOpt = 200,
             model: ModelOpt = "paraformer", index_name: IndexOpt = None) -> None:
    """Latency of BM25 direct, BM25 through the gateway, and the reranked path (c1, c8)."""
    from bench import pipeline as suite

    report("pipeline", suite.run(window=window, queries=queries, model=model, index=index_name),
           as_json)
