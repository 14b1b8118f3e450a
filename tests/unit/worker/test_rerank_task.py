"""worker.tasks: the rerank task reads the handoff and the window's vectors while it encodes."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from worker import protocol, tasks
from worker.protocol import ReasonCode, RerankFailed, RerankRequest

ENCODE_S = 0.15


class FakeRedis:
    """BLPOP of one handoff message, there from the start."""

    def __init__(self, key: str, message: bytes) -> None:
        self.items = {key: [message]}

    def blpop(self, keys: list[str], timeout: float) -> tuple[bytes, bytes] | None:
        queue = self.items.get(keys[0])
        if queue:
            return keys[0].encode(), queue.pop(0)
        time.sleep(min(timeout, 0.01))
        return None


class FakeService:
    def __init__(self, model: Any) -> None:
        self.model = model

    def rerank_prepared(self, prepared: Any, candidates: list, explain: bool,
                        gathered: Any) -> Any:
        answer = {"hits": [{"doc_id": d} for d, _ in candidates], "model": "default",
                  "model_version": "v1", "query_truncated": False, "prepared": prepared,
                  "gathered": gathered}
        return SimpleNamespace(to_dict=lambda: answer)


class FakeCache:
    """The process cache: a model whose encode takes ENCODE_S, and a gather that records
    when, where and how it was called (``lacking``: the window has an article whose
    vectors must be computed)."""

    def __init__(self, lacking: bool = False) -> None:
        self.lacking = lacking
        self.encode_done = 0.0
        self.gathers: list[dict[str, Any]] = []
        self.model_ = SimpleNamespace(prepare_query=self._encode)

    def _encode(self, query: str) -> str:
        time.sleep(ENCODE_S)
        self.encode_done = time.perf_counter()
        return f"encoded {query}"

    def model(self, name: str) -> Any:
        return self.model_

    def gather(self, index: str, name: str, doc_ids: list[str], compute: bool = True
               ) -> tuple[FakeService, str]:
        self.gathers.append({"at": time.perf_counter(), "compute": compute,
                             "main": threading.current_thread() is threading.main_thread()})
        if self.lacking and not compute:
            raise RerankFailed(ReasonCode.NO_VECTORS, "1 candidates have no vectors")
        return FakeService(self.model_), f"vectors of {index} ({len(doc_ids)})"


def _run(cache: FakeCache, monkeypatch: pytest.MonkeyPatch, message: bytes) -> dict:
    key = protocol.handoff_key("task-1")
    monkeypatch.setattr(tasks, "process_cache", lambda: cache)
    task = SimpleNamespace(app=SimpleNamespace(backend=SimpleNamespace(
        client=FakeRedis(key, message))), request=SimpleNamespace())
    request = RerankRequest(query="q", model="default", explain=False, handoff=key,
                            wait_ms=1000)
    return tasks._rerank(task, request)  # type: ignore[arg-type]


def test_the_vectors_are_read_while_the_query_encodes(monkeypatch: pytest.MonkeyPatch
                                                      ) -> None:
    cache = FakeCache()
    answer = _run(cache, monkeypatch, protocol.candidates_message("statutes", [["a", 2.0],
                                                                              ["b", 1.0]]))
    (gather,) = cache.gathers
    assert not gather["main"] and gather["compute"] is False
    assert gather["at"] < cache.encode_done  # it did not wait for the encode
    assert answer["gathered"] == "vectors of statutes (2)"
    assert answer["prepared"] == "encoded q"
    assert [h["doc_id"] for h in answer["hits"]] == ["a", "b"]
    timing = answer["timing_ms"]
    assert timing["encode"] >= ENCODE_S * 1000
    # The handoff was there at once: no idle time, so the busy time is the whole task.
    assert timing["wait"] < timing["encode"] <= timing["rerank"]


def test_a_window_that_needs_vectors_computed_is_gathered_after_the_encode(
        monkeypatch: pytest.MonkeyPatch) -> None:
    cache = FakeCache(lacking=True)
    answer = _run(cache, monkeypatch, protocol.candidates_message("statutes", [["new", 1.0]]))
    first, second = cache.gathers
    assert (first["main"], first["compute"]) == (False, False)
    assert (second["main"], second["compute"]) == (True, True)
    assert second["at"] >= cache.encode_done  # the encoder is free by then
    assert answer["gathered"] == "vectors of statutes (1)"


def test_a_called_off_rerank_raises_its_reason_after_the_encode(
        monkeypatch: pytest.MonkeyPatch) -> None:
    cache = FakeCache()
    with pytest.raises(RerankFailed, match="OpenSearch answered 500") as raised:
        _run(cache, monkeypatch, protocol.abort_message("OpenSearch answered 500"))
    assert raised.value.code is ReasonCode.CALLED_OFF
    assert cache.gathers == []
    assert cache.encode_done > 0  # the encode ran to its end first
