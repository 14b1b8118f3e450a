"""`lexrerank reindex` and `lexrerank rollback` (registered on the main app by lexrerank.cli).

See docs/reindex.md: a reindex builds ``ALIAS-v<N>``, embeds it through the ``embed`` workers,
verifies it and moves the alias in one atomic call; rollback moves it back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from lexrerank.config import get_settings

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def split_models(values: list[str] | None, default: str) -> list[str]:
    """``--model a --model b,c`` -> ``[a, b, c]`` (order kept, duplicates dropped)."""
    names = [n.strip() for v in (values or []) for n in v.split(",") if n.strip()]
    return list(dict.fromkeys(names or [default]))


def reindex(
    alias: Annotated[str, typer.Option(help="Alias the searches use (e.g. statutes); the job "
                                            "builds ALIAS-v<N> and moves the alias onto it.")],
    corpus: Annotated[Path, typer.Option(help="Corpus file (COLIEE civil code text or XML, "
                                              "ALQAC law.json or JSONL).")],
    fmt: Annotated[str | None, typer.Option(
        "--format", help="coliee | coliee-xml | alqac | jsonl (default: by file extension)")]
    = None,
    language: Annotated[str | None, typer.Option(help="en | vi | ja (default: the format's)")]
    = None,
    model: Annotated[list[str] | None, typer.Option(
        "--model", help="Model(s) whose article vectors to compute: a name or checkpoint dir; "
                        "repeatable or comma-separated (default: $LEXRERANK_MODEL).")] = None,
    chunk_size: Annotated[int, typer.Option(min=1, max=10_000,
                                            help="Articles per embed task.")] = 200,
    keep: Annotated[int | None, typer.Option(
        min=1, help="After the swap, keep this many versions (the live one included) and "
                    "delete older ones (default: keep all).")] = None,
    replicas: Annotated[int | None, typer.Option(
        min=0, help="Replicas of the new index once loaded (default: the live index's).")]
    = None,
    migrate: Annotated[bool, typer.Option(
        help="ALIAS is an index made by `lexrerank index`: replace it by the alias in the "
             "swap (that index is deleted; no rollback to it).")] = False,
    stall_timeout: Annotated[float, typer.Option(
        min=1, help="Fail (resumably) when no embed chunk finishes for this many seconds.")]
    = 600.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the job report as JSON.")]
    = False,
) -> None:
    """Build a new versioned index from a corpus, embed it on the workers, swap the alias."""
    from indexer.reindex_job import ReindexOptions, run_reindex
    from lexrerank.opensearch_client import opensearch_client

    settings = get_settings()
    options = ReindexOptions(alias=alias, corpus=corpus, fmt=fmt, language=language,
                             models=split_models(model, settings.default_model),
                             chunk_size=chunk_size, keep=keep, replicas=replicas,
                             migrate=migrate, stall_timeout_s=stall_timeout)
    report = run_reindex(opensearch_client(settings), settings, options)
    if as_json:
        print(json.dumps(report.to_dict()))
        return
    if report.up_to_date:
        out.print(f"{alias} already points at {report.index}, built from this corpus with "
                  "these models: nothing to do")
        return
    moved = f" (was {', '.join(report.previous)})" if report.previous else ""
    out.print(f"{alias} -> {report.index}{moved}: {report.documents} articles, "
              f"{report.embedded} vectors computed in {report.chunks_total} chunks"
              f"{' (resumed)' if report.resumed else ''}; warmed {len(report.warmed)} rerank "
              "process(es)")
    if report.pruned:
        out.print(f"deleted old versions: {', '.join(report.pruned)}")


def rollback(
    alias: Annotated[str, typer.Option(help="Alias to move back to its previous version.")],
) -> None:
    """Point an alias back at the version it replaced, in one atomic call."""
    from indexer.rollback import rollback as roll_back
    from lexrerank.opensearch_client import opensearch_client

    settings = get_settings()
    current, target = roll_back(opensearch_client(settings), settings, alias)
    out.print(f"{alias} -> {target} (was {current}; {current} is kept)")


def register(app: typer.Typer) -> None:
    """Add the two commands to the main `lexrerank` app."""
    app.command("reindex")(reindex)
    app.command("rollback")(rollback)
