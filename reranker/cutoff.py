"""How many articles a query returns: a policy over its ranked scores, tuned to maximise F2.

F2 weighs recall four times as much as precision, so returning a second article whose score
is close to the first often pays. Policies (scores sorted best first, at least one returned,
at most ``max_k``):

- ``top_k``: the first ``k``.
- ``ratio``: every article with score >= ``value`` x the top score (for positive scores
  such as BM25).
- ``margin``: every article with score >= top score - ``value`` (for logits or fused scores).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from reranker.ir_metrics import precision_recall_f2

CUTOFF_KINDS = ("top_k", "ratio", "margin")


@dataclass(frozen=True)
class CutoffPolicy:
    kind: str = "top_k"
    value: float = 1.0
    max_k: int = 1

    def __post_init__(self) -> None:
        if self.kind not in CUTOFF_KINDS:
            raise ValueError(f"unknown cut-off kind {self.kind!r}; choose one of {CUTOFF_KINDS}")
        if self.max_k < 1:
            raise ValueError("max_k must be at least 1")

    def count(self, scores: Sequence[float]) -> int:
        """Number of leading articles to return for ``scores`` (sorted best first)."""
        if not scores:
            return 0
        if self.kind == "top_k":
            return min(int(self.value), self.max_k, len(scores))
        top = scores[0]
        floor = self.value * top if self.kind == "ratio" else top - self.value
        n = 1
        while n < min(self.max_k, len(scores)) and scores[n] >= floor:
            n += 1
        return n

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> CutoffPolicy:
        return cls(kind=data["kind"], value=float(data["value"]), max_k=int(data["max_k"]))

    @classmethod
    def parse(cls, spec: str) -> CutoffPolicy:
        """Parse ``top_k:N``, ``ratio:V[:MAX]`` or ``margin:V[:MAX]`` (command-line form)."""
        parts = spec.split(":")
        try:
            if parts[0] == "top_k" and len(parts) == 2:
                k = int(parts[1])
                return cls("top_k", float(k), k)
            if parts[0] in ("ratio", "margin") and len(parts) in (2, 3):
                return cls(parts[0], float(parts[1]), int(parts[2]) if len(parts) == 3 else 3)
        except ValueError:
            pass
        raise ValueError(f"bad cut-off {spec!r}: use top_k:N, ratio:V[:MAX] or margin:V[:MAX]")

    def __str__(self) -> str:
        if self.kind == "top_k":
            return f"top_k:{int(self.value)}"
        return f"{self.kind}:{self.value:g}:{self.max_k}"


def mean_f2(policy: CutoffPolicy, rankings: Sequence[tuple[Sequence[str], Sequence[float]]],
            golds: Sequence[Sequence[str]]) -> float:
    """Macro F2 of ``policy`` over queries given as (doc ids, scores) sorted best first."""
    total = 0.0
    for (docs, scores), gold in zip(rankings, golds, strict=True):
        total += precision_recall_f2(docs[: policy.count(scores)], gold)[2]
    return total / max(len(golds), 1)


def candidate_policies(kind: str, scores: Sequence[Sequence[float]]) -> list[CutoffPolicy]:
    """The grid searched by :func:`tune_cutoff` for one kind of score."""
    policies = [CutoffPolicy("top_k", float(k), k) for k in (1, 2, 3)]
    if kind == "ratio":
        values = [round(0.5 + 0.02 * i, 2) for i in range(25)]  # 0.50 .. 0.98
    else:
        gaps = sorted(s[0] - s[1] for s in scores if len(s) > 1)
        # Quantiles of the observed top-1/top-2 gaps give a scale-free grid.
        values = sorted({round(gaps[int(q * (len(gaps) - 1))], 6) for q in
                         [i / 40 for i in range(1, 40)]}) if gaps else []
    for max_k in (2, 3, 5):
        policies += [CutoffPolicy(kind, v, max_k) for v in values]
    return policies


def tune_cutoff(rankings: Sequence[tuple[Sequence[str], Sequence[float]]],
                golds: Sequence[Sequence[str]], kind: str = "margin") -> tuple[CutoffPolicy,
                                                                               float]:
    """Grid-search the policy that maximises macro F2 on dev rankings.

    Ties go to the earlier (simpler) policy, so top-1 wins unless another is strictly better.
    """
    if kind not in ("ratio", "margin"):
        raise ValueError("kind must be 'ratio' or 'margin'")
    best, best_f2 = CutoffPolicy(), -1.0
    for policy in candidate_policies(kind, [s for _, s in rankings]):
        f2 = mean_f2(policy, rankings, golds)
        if f2 > best_f2 + 1e-12:
            best, best_f2 = policy, f2
    return best, best_f2
