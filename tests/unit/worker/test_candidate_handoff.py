"""The candidates handoff between the gateway and a running rerank task (worker side)."""

from __future__ import annotations

import time

import pytest

from worker import candidate_handoff as handoff
from worker import protocol
from worker.protocol import Handoff, ReasonCode, RerankFailed


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
    key = protocol.handoff_key("t1")
    client = FakeList({key: [protocol.candidates_message("statutes-v2", [["a", 1.5]])]})
    assert handoff.receive(client, key, 1.0) == Handoff("statutes-v2", [("a", 1.5)])


def test_an_abort_says_why() -> None:
    key = protocol.handoff_key("t2")
    client = FakeList({key: [protocol.abort_message("OpenSearch answered 404")]})
    with pytest.raises(RerankFailed, match="called the rerank off: OpenSearch answered 404"
                       ) as raised:
        handoff.receive(client, key, 1.0)
    assert raised.value.code is ReasonCode.CALLED_OFF


def test_nothing_in_time_is_an_error_not_a_hang() -> None:
    client = FakeList()
    start = time.monotonic()
    with pytest.raises(RerankFailed, match="no candidates from the gateway within 50 ms"
                       ) as raised:
        handoff.receive(client, protocol.handoff_key("t3"), 0.05)
    assert raised.value.code is ReasonCode.DEADLINE_PASSED
    assert time.monotonic() - start < 1.0
    # Never BLPOP's "0 = forever", never beyond the client's socket timeout.
    assert all(0 < t <= handoff.MAX_BLOCK_S for t in client.timeouts)


def test_only_handoff_keys_are_read() -> None:
    with pytest.raises(RerankFailed, match="not a candidates handoff key"):
        handoff.receive(FakeList({"celery": [b"{}"]}), "celery", 1.0)
    with pytest.raises(RerankFailed, match="not a candidates handoff key"):
        handoff.receive(FakeList(), ["a", "list"], 1.0)  # type: ignore[arg-type]
