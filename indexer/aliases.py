"""Versioned indexes behind an alias: ``NAME-v<N>`` indexes, the alias ``NAME`` on one of them.

Searches go to the alias; a reindex job builds ``NAME-v<N+1>`` and moves the alias in one
``_aliases`` call, so every search sees either the old index or the new one, never a mix.
"""

from __future__ import annotations

import re
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy.exceptions import NotFoundError

from lexrerank.errors import LexrerankError

# OpenSearch's own rules for index names, minus the wildcard/comma forms we never want here.
_ALIAS_RE = re.compile(r"^[a-z0-9][a-z0-9_.+-]*$")


def check_alias_name(alias: str) -> None:
    """Raise a clear error unless ``alias`` is a usable alias / index-name prefix."""
    if not _ALIAS_RE.match(alias) or len(alias) > 200:
        raise LexrerankError(f"--alias {alias!r} is not a valid name: use lower-case letters, "
                             "digits, '-', '_', '.' or '+', starting with a letter or digit")


def version_name(alias: str, version: int) -> str:
    """The concrete index of ``alias``'s version ``version`` (``statutes-v3``)."""
    return f"{alias}-v{version}"


def versioned_indexes(client: OpenSearch, alias: str) -> dict[int, str]:
    """``{version: index}`` of the existing ``<alias>-v<N>`` indexes."""
    pattern = re.compile(rf"^{re.escape(alias)}-v(\d+)$")
    # A wildcard that matches nothing is an empty list, not an error.
    rows = client.cat.indices(index=f"{alias}-v*", format="json", h="index",
                              expand_wildcards="open,closed")
    found = {}
    for row in rows:
        match = pattern.match(row["index"])
        if match:
            found[int(match.group(1))] = row["index"]
    return dict(sorted(found.items()))


def version_of(alias: str, index: str) -> int | None:
    """The version number of ``index`` if it is one of ``alias``'s versions, else None."""
    match = re.match(rf"^{re.escape(alias)}-v(\d+)$", index)
    return int(match.group(1)) if match else None


def alias_targets(client: OpenSearch, alias: str) -> list[str]:
    """The indexes ``alias`` points at (empty when the alias does not exist)."""
    try:
        return sorted(client.indices.get_alias(name=alias))
    except NotFoundError:
        return []


def is_concrete_index(client: OpenSearch, name: str) -> bool:
    """True when ``name`` is an index itself (not an alias)."""
    return client.indices.exists(index=name) and not client.indices.exists_alias(name=name)


def resolve_concrete(client: OpenSearch, name: str) -> str:
    """The one concrete index behind ``name`` (an alias of one index, or an index)."""
    targets = alias_targets(client, name)
    if len(targets) == 1:
        return targets[0]
    if len(targets) > 1:
        raise LexrerankError(f"alias {name!r} points at {len(targets)} indexes "
                             f"({', '.join(targets)}); it must point at one")
    return name


def swap_alias(client: OpenSearch, alias: str, new_index: str, old_indexes: list[str],
               remove_index: str | None = None) -> None:
    """Point ``alias`` at ``new_index`` only, in one atomic ``_aliases`` call.

    ``old_indexes`` lose the alias in the same call. ``remove_index`` (a concrete index named
    like the alias, when migrating) is deleted in that same call, which is the only way to
    replace an index by an alias of the same name without a gap.
    """
    actions: list[dict[str, Any]] = [{"remove": {"index": old, "alias": alias}}
                                     for old in old_indexes if old != new_index]
    if remove_index is not None:
        actions.append({"remove_index": {"index": remove_index}})
    actions.append({"add": {"index": new_index, "alias": alias}})
    client.indices.update_aliases(body={"actions": actions})
