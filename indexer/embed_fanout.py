"""The reindex job's embedding step: article-side vectors fanned out to the embed workers.

The ids of the documents still lacking each model version's vectors become chunks; each
chunk is one ``lexrerank.embed`` task on the embed queue, all sent as one Celery group. The
job then polls the chunks' results with a progress bar (and progress records for ops) until
every chunk has finished, failing resumably when none finishes for ``stall_timeout_s`` or
when a chunk failed. The embed task skips documents that already hold the version, so a
re-run computes only what is missing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from celery import Celery, group
from celery.canvas import Signature
from celery.result import AsyncResult, GroupResult
from opensearchpy import OpenSearch
from opensearchpy.helpers import scan
from tqdm import tqdm

from indexer.reindex_inputs import ModelSpec
from lexrerank.errors import LexrerankError

DEFAULT_CHUNK_SIZE = 200
POLL_S = 0.5
#: ``progress(**fields)``: update the job's progress record (fields of
#: :data:`lexrerank.reindex_progress.FIELDS`).
ProgressFn = Callable[..., None]


def lacking_ids(client: OpenSearch, index: str, version: str) -> list[str]:
    """Ids of the documents of ``index`` holding no vectors of ``version``."""
    field_name = f"vectors.{version}.model_version"
    docs = scan(client, index=index, query={"query": {"match_all": {}}},
                _source=[field_name], size=1000)
    return [d["_id"] for d in docs
            if ((d.get("_source") or {}).get("vectors") or {}).get(version) is None]


def chunks(ids: list[str], size: int) -> Iterator[list[str]]:
    """``ids`` in consecutive lists of ``size`` (the last one shorter)."""
    for i in range(0, len(ids), size):
        yield ids[i:i + size]


class EmbedOutcome(NamedTuple):
    computed: int  # (document, model) vectors computed by the workers
    chunks: int  # chunks sent
    failed: int  # chunks that failed (0 on return: failures raise)


@dataclass
class _Tally:
    """What the finished chunks reported so far."""

    done: int = 0
    failed: int = 0
    computed: int = 0
    errors: list[str] = field(default_factory=list)  # the first three failures

    def collect(self, result: AsyncResult) -> None:
        if result.successful():
            self.computed += int((result.result or {}).get("computed", 0))
        else:
            self.failed += 1
            if len(self.errors) < 3:
                self.errors.append(str(result.result))
        result.forget()
        self.done += 1


@dataclass
class EmbedFanout:
    """Send and await the embed chunks of one index (see the module docstring)."""

    client: OpenSearch
    app: Celery
    queue: str
    chunk_size: int = DEFAULT_CHUNK_SIZE
    stall_timeout_s: float = 600.0
    show_progress: bool = True
    progress: ProgressFn = field(default=lambda **fields: None)

    def run(self, index: str, models: list[ModelSpec], longest: dict[str, int]
            ) -> EmbedOutcome:
        """Fan chunks out to the embed queue and wait for all of them.

        Ids are ordered by their longest sentence (``longest``) before chunking: each chunk
        is encoded in one call, and batches of similar lengths waste little on padding.
        Raises :class:`LexrerankError` on a stall or a failed chunk; the alias is not moved
        and a re-run resumes (finished chunks are kept). On any error the pending tasks are
        revoked.
        """
        self.client.indices.refresh(index=index)  # refresh_interval is -1: see every doc
        signatures = self._signatures(index, models, longest)
        total = len(signatures)
        self.progress(chunks_total=total, chunks_done=0, chunks_failed=0)
        if not total:
            return EmbedOutcome(0, 0, 0)
        result = group(signatures, app=self.app).apply_async()
        with tqdm(total=total, unit="chunk", desc=f"embedding {index}", file=sys.stderr,
                  disable=not self.show_progress) as bar:
            try:
                tally = self._wait(result, total, bar)
            except BaseException:
                result.revoke()  # nobody will wait for them; a re-run sends what is missing
                raise
        if tally.failed:
            raise LexrerankError(f"{tally.failed} of {total} embed chunks failed (first: "
                                 f"{'; '.join(tally.errors)}); the alias was not moved. Fix "
                                 "the cause and re-run: finished chunks are kept")
        return EmbedOutcome(tally.computed, total, tally.failed)

    def _signatures(self, index: str, models: list[ModelSpec], longest: dict[str, int]
                    ) -> list[Signature]:
        """One embed task per chunk of the ids lacking each model's vectors."""
        from worker.protocol import EMBED_TASK

        signatures = []
        for model in models:
            pending = sorted(lacking_ids(self.client, index, model.model_version),
                             key=lambda doc_id: longest.get(doc_id, 0))
            for ids in chunks(pending, self.chunk_size):
                signatures.append(self.app.signature(
                    EMBED_TASK, args=(index, ids, model.name), queue=self.queue))
        return signatures

    def _wait(self, result: GroupResult, total: int, bar: Any) -> _Tally:
        """Poll the chunks until all finished; raises when none finishes for too long."""
        pending = dict(enumerate(result.results))
        tally = _Tally()
        started = last_change = time.monotonic()
        while pending:
            finished = [i for i, r in pending.items() if r.ready()]
            for i in finished:
                tally.collect(pending.pop(i))
            if finished:
                last_change = time.monotonic()
                bar.update(len(finished))
                bar.set_postfix(vectors=tally.computed, failed=tally.failed)
                rate = tally.done / (time.monotonic() - started)
                self.progress(chunks_done=tally.done - tally.failed,
                              chunks_failed=tally.failed,
                              eta_s=round((total - tally.done) / rate, 1) if rate else None)
            elif time.monotonic() - last_change > self.stall_timeout_s:
                raise LexrerankError(
                    f"no embed chunk finished in {self.stall_timeout_s:.0f}s "
                    f"({len(pending)} of {total} pending): is a worker consuming "
                    f"queue {self.queue!r}? Start one (`lexrerank worker`) and re-run: the "
                    "job resumes")
            if pending:
                time.sleep(POLL_S)
        return tally
