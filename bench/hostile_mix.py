"""``bench faults`` scenario ``hostile_mix``: valid, invalid and hostile requests, mixed.

:data:`CLIENTS` closed-loop clients, each on raw sockets (a new connection per request), go
round the kinds in :data:`KINDS` (each client starting at a different one) for the
scenario's duration against a private gateway and worker:

- valid: ``reranked`` (the pipeline, ``timeout_ms`` = the deadline), ``plain`` (BM25);
- invalid: ``bad_json`` (a truncated pipeline body), ``bad_option`` (an unknown
  ``ext.rerank`` key);
- hostile: ``big_header`` (one 9000-byte header: OpenSearch's 8 KB limit, which used to
  leave a poisoned connection in the gateway's pool), ``huge_header`` (64 KB of headers),
  ``lone_surrogate`` (``"\\ud800"`` in the query text), ``huge_integer`` (5000 digits),
  ``unknown_method`` (``PROPFIND``), ``abandoned_body`` (a ``PUT`` of a new index that
  announces 5000 bytes, sends 100 and hangs up: nothing may be created), ``slow_body`` (a
  pipeline body sent in pieces over about a second).

Every request that expects an answer waits at most the deadline + 2 s (``client_timeout_s``);
one that gets none in that time is ``hung``. Reported: per kind the requests and status
counts; ``hung``; ``unexpected_5xx`` (any 5xx: OpenSearch stays up throughout);
``unexpected_status`` (a non-5xx outside the kind's expected ones); for valid reranked
searches ``sent``, ``answered`` (200), ``ok`` and ``fallbacks``, ``over_deadline`` (answers
slower than the deadline + ``MARGIN_MS``), ``p95_ms``; ``abandoned_applied`` (the probe
index exists after all: a half-sent body was forwarded). Targets: 0 hung, 0 unexpected 5xx,
every valid reranked search answered.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from lexrerank.bm25 import bm25_body
from lexrerank.evaluation import percentile

CLIENTS = 4
MARGIN_MS = 250
KINDS = ("reranked", "big_header", "plain", "lone_surrogate", "reranked", "huge_integer",
         "bad_json", "unknown_method", "reranked", "abandoned_body", "huge_header",
         "bad_option", "slow_body")
# What each kind may be answered (the gateway's limit for headers may be under OpenSearch's).
EXPECTED: dict[str, frozenset[int]] = {
    "reranked": frozenset({200}), "plain": frozenset({200}), "slow_body": frozenset({200}),
    "bad_json": frozenset({400}), "bad_option": frozenset({400}),
    "big_header": frozenset({400, 431}), "huge_header": frozenset({400, 431}),
    "lone_surrogate": frozenset({400}), "huge_integer": frozenset({400}),
    "unknown_method": frozenset({405}),
}


@dataclass(frozen=True)
class Outcome:
    kind: str
    status: int  # 0: no answer within the client timeout; -1: connection error
    ms: float
    rerank: str | None = None


class HostileClient:
    """Builds and sends one request of each kind to ``host:port`` (raw HTTP/1.1)."""

    def __init__(self, port: int, index: str, texts: list[str], deadline_ms: int,
                 probe_index: str) -> None:
        self.port, self.index, self.texts = port, index, texts
        self.deadline_ms, self.probe_index = deadline_ms, probe_index
        self.timeout_s = deadline_ms / 1000 + 2
        self._n = 0

    def _text(self) -> str:
        self._n += 1
        return self.texts[self._n % len(self.texts)]

    def _reranked_body(self, text: str | None = None) -> bytes:
        text = text if text is not None else self._text()
        body = bm25_body(text, 10)
        body["ext"] = {"rerank": {"query_context": {"query_text": text},
                                  "timeout_ms": self.deadline_ms}}
        return json.dumps(body).encode()

    def _post(self, path: str, body: bytes, extra: bytes = b"") -> bytes:
        return (f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n").encode() + extra + b"\r\n" + body

    def request(self, kind: str) -> tuple[bytes | list[bytes], bool]:
        """(the bytes to send, or pieces sent ~0.12 s apart; whether an answer is awaited)."""
        pipeline = f"/{self.index}/_search?search_pipeline=lexrerank"
        if kind == "reranked":
            return self._post(pipeline, self._reranked_body()), True
        if kind == "plain":
            return self._post(f"/{self.index}/_search",
                              json.dumps(bm25_body(self._text(), 10)).encode()), True
        if kind == "bad_json":
            return self._post(pipeline, self._reranked_body()[:-7]), True
        if kind == "bad_option":
            body = json.loads(self._reranked_body())
            body["ext"]["rerank"]["no_such_option"] = 1
            return self._post(pipeline, json.dumps(body).encode()), True
        if kind == "big_header":
            return (f"GET /{self.index}/_search HTTP/1.1\r\nHost: bench\r\nX-Big: "
                    f"{'a' * 9000}\r\n\r\n").encode(), True
        if kind == "huge_header":
            lines = "".join(f"X-Pad-{i}: {'b' * 1000}\r\n" for i in range(64))
            return f"GET / HTTP/1.1\r\nHost: bench\r\n{lines}\r\n".encode(), True
        if kind == "lone_surrogate":
            body = self._reranked_body("PLACEHOLDER").replace(b'"PLACEHOLDER"',
                                                              b'"minor \\ud800"')
            return self._post(pipeline, body), True
        if kind == "huge_integer":
            body = self._reranked_body()[:-1] + b', "min_score": ' + b"7" * 5000 + b"}"
            return self._post(pipeline, body), True
        if kind == "unknown_method":
            return b"PROPFIND / HTTP/1.1\r\nHost: bench\r\nContent-Length: 0\r\n\r\n", True
        if kind == "abandoned_body":
            return (f"PUT /{self.probe_index} HTTP/1.1\r\nHost: bench\r\nContent-Type: "
                    "application/json\r\nContent-Length: 5000\r\n\r\n").encode() + b" " * 100, \
                False
        if kind == "slow_body":
            whole = self._post(pipeline, self._reranked_body())
            step = max(len(whole) // 8, 1)
            return [whole[i:i + step] for i in range(0, len(whole), step)], True
        raise ValueError(kind)

    def send(self, kind: str) -> Outcome:
        payload, awaited = self.request(kind)
        started = time.perf_counter()
        sock = None
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout_s)
            if isinstance(payload, list):
                for piece in payload:
                    sock.sendall(piece)
                    time.sleep(0.12)
            else:
                sock.sendall(payload)
            if not awaited:
                return Outcome(kind, -2, (time.perf_counter() - started) * 1000)
            # The whole answer within the client timeout, from the first byte sent.
            sock.settimeout(max(self.timeout_s - (time.perf_counter() - started), 0.01))
            response = http.client.HTTPResponse(sock)
            response.begin()
            data = response.read()
            ms = (time.perf_counter() - started) * 1000
            rerank = None
            if kind in ("reranked", "slow_body") and response.status == 200:
                rerank = (json.loads(data).get("ext") or {}).get("rerank", {}).get("status")
            return Outcome(kind, response.status, ms, rerank)
        except TimeoutError:
            return Outcome(kind, 0, (time.perf_counter() - started) * 1000)
        except (OSError, http.client.HTTPException):
            return Outcome(kind, -1, (time.perf_counter() - started) * 1000)
        finally:
            if sock is not None:
                sock.close()


def run_mix(port: int, index: str, texts: list[str], deadline_ms: int, duration_s: float,
            probe_index: str | None = None) -> tuple[list[Outcome], str]:
    """Run :data:`CLIENTS` clients for ``duration_s``; their outcomes and the probe index."""
    probe_index = probe_index or f"hostile-probe-{uuid.uuid4().hex[:8]}"
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + duration_s

    def loop(offset: int) -> None:
        client = HostileClient(port, index, texts[offset:] + texts[:offset], deadline_ms,
                               probe_index)
        i = offset
        while time.monotonic() < stop_at:
            outcome = client.send(KINDS[i % len(KINDS)])
            i += 1
            with lock:
                outcomes.append(outcome)

    threads = [threading.Thread(target=loop, args=(n * 3,), daemon=True)
               for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes, probe_index


def summarize_mix(outcomes: list[Outcome], deadline_ms: int, duration_s: float,
                  abandoned_applied: bool) -> dict[str, Any]:
    """The report of one ``hostile_mix`` run (see the module doc)."""
    per_kind: dict[str, Counter] = defaultdict(Counter)
    for o in outcomes:
        per_kind[o.kind][str(o.status)] += 1
    awaited = [o for o in outcomes if o.status != -2]
    valid = [o for o in outcomes if o.kind == "reranked"]
    answered = [o for o in valid if o.status == 200]
    return {
        "fault": "hostile_mix",
        "duration_s": duration_s,
        "clients": CLIENTS,
        "deadline_ms": deadline_ms,
        "client_timeout_s": deadline_ms / 1000 + 2,
        "requests": len(outcomes),
        "per_kind": {k: dict(v) for k, v in sorted(per_kind.items())},
        "hung": sum(1 for o in awaited if o.status == 0),
        "connection_errors": sum(1 for o in awaited if o.status == -1),
        "unexpected_5xx": sum(1 for o in awaited if 500 <= o.status < 600),
        "unexpected_status": sum(1 for o in awaited if 0 < o.status < 500
                                 and o.status not in EXPECTED[o.kind]),
        "reranked": {
            "sent": len(valid), "answered": len(answered),
            "ok": sum(1 for o in answered if o.rerank == "ok"),
            "fallbacks": sum(1 for o in answered if o.rerank != "ok"),
            "over_deadline": sum(1 for o in answered if o.ms > deadline_ms + MARGIN_MS),
            "p95_ms": round(percentile([o.ms for o in answered], 95), 1) if answered else None,
        },
        "abandoned_sent": sum(1 for o in outcomes if o.kind == "abandoned_body"),
        "abandoned_applied": abandoned_applied,
    }
