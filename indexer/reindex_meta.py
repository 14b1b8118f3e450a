"""A reindex job's record inside the index it builds: ``_meta.lexrerank.reindex``.

The record holds the job (alias, version, who, when, the corpus source, the models, the
indexes it replaces) and its ``state``: ``loading`` -> ``embedding`` -> ``ready`` (verified)
-> ``swapped`` (the alias points at it), or ``failed``; a rollback marks the index it leaves
``rolled_back``. Resuming, pruning and rollback read it; it lives as long as the index.
"""

from __future__ import annotations

import getpass
import os
import socket
from datetime import UTC, datetime
from typing import Any

from opensearchpy import OpenSearch

from indexer.article_vectors import index_meta

# Meta states of a versioned index. Only "swapped" ones ever served; others may be resumed.
DONE_STATES = ("swapped", "rolled_back")
# Versions that were verified complete: what pruning keeps and rollback may go back to.
COMPLETE_STATES = ("swapped", "ready")


def now_iso() -> str:
    """The current UTC time, ISO 8601 to the second (the record's timestamps)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def who() -> str:
    """``user@host`` of the process running the job (``uid<N>`` without a passwd entry)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def job_meta(client: OpenSearch, index: str) -> dict[str, Any]:
    """The job record of ``index`` (``{}`` for an index no reindex job built)."""
    return index_meta(client, index).get("reindex", {})


def update_meta(client: OpenSearch, index: str, **changes: Any) -> dict[str, Any]:
    """Merge ``changes`` into ``_meta.lexrerank`` of ``index`` (``reindex`` merged one level)."""
    meta = index_meta(client, index)
    if "reindex" in changes:
        changes["reindex"] = {**meta.get("reindex", {}), **changes["reindex"]}
    meta = {**meta, **changes}
    client.indices.put_mapping(index=index, body={"_meta": {"lexrerank": meta}})
    return meta
