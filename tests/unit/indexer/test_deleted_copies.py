"""When the deleted copies that vector updates leave can be merged away."""

from __future__ import annotations

from typing import Any

from indexer.article_vectors import _history_released


class _Stats:
    """An ``indices.stats(level="shards")`` answer for one index, one shard, two copies."""

    def __init__(self, primary_retains: int, replica_retains: int, newest: int) -> None:
        def copy(primary: bool, retains: int) -> dict[str, Any]:
            return {"routing": {"primary": primary}, "seq_no": {"max_seq_no": newest},
                    "retention_leases": {"leases": [{"retaining_seq_no": retains}]}}

        self.answer = {"indices": {"civil-v1": {"shards": {"0": [
            copy(True, primary_retains), copy(False, replica_retains)]}}}}

    @property
    def indices(self) -> _Stats:
        return self

    def stats(self, **_: Any) -> dict[str, Any]:
        return self.answer


def test_a_lease_still_retaining_the_newest_operation_holds_the_copies() -> None:
    assert not _history_released(_Stats(primary_retains=160, replica_retains=0, newest=160),
                                 "civil")
    assert not _history_released(_Stats(primary_retains=12, replica_retains=0, newest=160),
                                 "civil")


def test_leases_past_the_newest_operation_release_them() -> None:
    # Only primaries are read: a replica copy's own stats do not hold the merge back.
    assert _history_released(_Stats(primary_retains=161, replica_retains=0, newest=160),
                             "civil")
