"""Deleting an alias's old versioned indexes after a swap (``lexrerank reindex --keep N``)."""

from __future__ import annotations

from opensearchpy import OpenSearch

from indexer.aliases import alias_targets, versioned_indexes
from indexer.reindex_meta import COMPLETE_STATES, job_meta


def prune_versions(client: OpenSearch, alias: str, keep: int) -> list[str]:
    """Delete ``alias``'s versions older than the live one, keeping ``keep`` in all.

    Kept: the live index, then the index it replaced (the rollback target), then the newest
    other complete versions. Deleted: the rest of the older ones, including rolled-back,
    failed and abandoned unfinished ones. Never an index the alias points at, nor a version
    newer than the live one (a job may be building it). Returns the deleted names, sorted.
    """
    live = set(alias_targets(client, alias))
    versions = versioned_indexes(client, alias)
    live_numbers = [n for n, name in versions.items() if name in live]
    if not live_numbers:
        return []
    older = {n: name for n, name in versions.items() if n < min(live_numbers)}
    recorded: list[str] = []
    for name in live:
        recorded += job_meta(client, name).get("previous") or []
    complete = [name for n, name in sorted(older.items(), reverse=True)
                if job_meta(client, name).get("state") in COMPLETE_STATES]
    preferred = [n for n in dict.fromkeys([*recorded, *complete]) if n in older.values()]
    kept = set(preferred[:max(keep - len(live), 0)])
    doomed = [name for name in older.values() if name not in kept]
    for name in doomed:
        client.indices.delete(index=name)
    return sorted(doomed)
