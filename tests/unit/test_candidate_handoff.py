"""The candidates handoff between the gateway and a running rerank task (worker side)."""

from __future__ import annotations

import time

import pytest

from lexrerank.errors import LexrerankError
from worker import candidate_handoff as handoff


class FakeList:
    """A redis-py client reduced to BLPOP on in-memory lists (``None`` when empty)."""

    def __init__(self, items: dict[str, list[bytes]] | None = None) -> None:
        self.items = items or {}
        self.timeouts: list[float] = []

    def blpop(self, keys: list[str], timeout: float) -> tuple[bytes, bytes] | None:
        self.timeouts.append(timeout)
        queue = self.items.get(keys[0])
        if queue:
            return keys[0].encode(), queue.pop(0)
        time.sleep(min(timeout, 0.01))
        return None


def test_candidates_round_trip() -> None:
    key = handoff.handoff_key("t1")
    client = FakeList({key: [handoff.candidates_message("statutes-v2", [["a", 1.5]])]})
    assert handoff.receive(client, key, 1.0) == ("statutes-v2", [["a", 1.5]])


def test_an_abort_says_why() -> None:
    key = handoff.handoff_key("t2")
    client = FakeList({key: [handoff.abort_message("OpenSearch answered 404")]})
    with pytest.raises(LexrerankError, match="called the rerank off: OpenSearch answered 404"):
        handoff.receive(client, key, 1.0)


def test_nothing_in_time_is_an_error_not_a_hang() -> None:
    client = FakeList()
    start = time.monotonic()
    with pytest.raises(LexrerankError, match="no candidates from the gateway within 50 ms"):
        handoff.receive(client, handoff.handoff_key("t3"), 0.05)
    assert time.monotonic() - start < 1.0
    # Never BLPOP's "0 = forever", never beyond the client's socket timeout.
    assert all(0 < t <= handoff.MAX_BLOCK_S for t in client.timeouts)


def test_only_handoff_keys_are_read() -> None:
    with pytest.raises(LexrerankError, match="not a candidates handoff key"):
        handoff.receive(FakeList({"celery": [b"{}"]}), "celery", 1.0)
    with pytest.raises(LexrerankError, match="not a candidates handoff key"):
        handoff.receive(FakeList(), ["a", "list"], 1.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("raw, message", [
    (b"not json", "unreadable"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"candidates": []}', "names no index"),
    (b'{"index": "", "candidates": []}', "names no index"),
])
def test_bad_messages_are_refused(raw: bytes, message: str) -> None:
    with pytest.raises(LexrerankError, match=message):
        handoff.parse_message(raw)


def test_the_key_outlives_the_deadline() -> None:
    assert handoff.key_ttl_s(0.2) == 1 + handoff.TTL_MARGIN_S
    assert handoff.key_ttl_s(0) >= handoff.TTL_MARGIN_S
