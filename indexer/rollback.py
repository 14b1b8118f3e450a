"""``lexrerank rollback``: the alias back on the version it replaced, in one atomic call."""

from __future__ import annotations

from celery import Celery
from opensearchpy import OpenSearch

from indexer.aliases import (
    alias_targets,
    check_alias_name,
    swap_alias,
    version_of,
    versioned_indexes,
)
from indexer.reindex_meta import COMPLETE_STATES, job_meta, now_iso, update_meta
from indexer.warm import warm_workers
from lexrerank.config import Settings
from lexrerank.errors import LexrerankError


def rollback(client: OpenSearch, settings: Settings, alias: str,
             celery_app: Celery | None = None, warm_timeout_s: float = 300.0
             ) -> tuple[str, str]:
    """Point ``alias`` back at its previous completed version, atomically: (from, to).

    "Previous" is the index the live one replaced (recorded in its job), when it still
    exists; else the newest complete version below the live one. The index rolled back from
    is kept and marked ``rolled_back``; a later reindex builds a new version above it. The
    rerank workers are warmed on the target first. Raises :class:`LexrerankError` when the
    alias is not on exactly one of its versions or no complete older version is left.
    """
    from worker.celery_app import make_app

    check_alias_name(alias)
    current, current_version = _live_version(client, alias)
    target = _rollback_target(client, alias, current, current_version)
    models = [m["name"] for m in job_meta(client, target).get("models", [])]
    if models:
        warm_workers(celery_app or make_app(settings), settings.rerank_queue, target, models,
                     evict_prefix=f"{alias}-v", keep=[target, current],
                     timeout_s=warm_timeout_s)
    swap_alias(client, alias, target, [current])
    update_meta(client, current, reindex={"state": "rolled_back",
                                          "rolled_back_at": now_iso()})
    update_meta(client, target, reindex={"state": "swapped", "swapped_at": now_iso()})
    return current, target


def _live_version(client: OpenSearch, alias: str) -> tuple[str, int]:
    """(index, version number) of the one versioned index ``alias`` points at (else
    :class:`LexrerankError`)."""
    live = alias_targets(client, alias)
    if len(live) != 1:
        raise LexrerankError(f"alias {alias!r} points at {len(live) or 'no'} indexes; "
                             "rollback needs it on exactly one versioned index")
    version = version_of(alias, live[0])
    if version is None:
        raise LexrerankError(f"alias {alias!r} points at {live[0]}, not one of its versions "
                             f"({alias}-v<N>): nothing to roll back to")
    return live[0], version


def _rollback_target(client: OpenSearch, alias: str, current: str, current_version: int
                     ) -> str:
    """The index ``current`` replaced, when it is still there; else the newest complete one
    below it (else :class:`LexrerankError`)."""
    versions = versioned_indexes(client, alias)
    recorded = job_meta(client, current).get("previous") or []
    candidates = [name for name in recorded if name in versions.values() and name != current]
    for number, name in sorted(versions.items(), reverse=True):
        if number < current_version and job_meta(client, name).get("state") in COMPLETE_STATES:
            candidates.append(name)
    if not candidates:
        raise LexrerankError(f"no complete version of {alias!r} older than {current} is left "
                             "(pruned with --keep?): nothing to roll back to")
    return candidates[0]
