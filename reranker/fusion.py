"""Score fusion: a calibrated combination of the first-stage score and the model score.

Both scores are min-max normalised within the query's rerank window, so BM25's corpus- and
query-dependent scale and the model's logit scale do not matter; the fused score is
``alpha * bm25_norm + (1 - alpha) * model_norm``. ``alpha`` is tuned on dev data together with
the cut-off policy (F2 rewards returning a second article when it scores close to the first).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from reranker.cutoff import CutoffPolicy, tune_cutoff


@dataclass(frozen=True)
class Fusion:
    alpha: float = 0.0  # weight of the first-stage score; 0 = model only

    def fuse(self, first_stage: Sequence[float], model: Sequence[float]) -> np.ndarray:
        """Fused scores, shape [N], for N candidates of one query (same order as inputs)."""
        return (self.alpha * minmax(np.asarray(first_stage, dtype=np.float64))
                + (1.0 - self.alpha) * minmax(np.asarray(model, dtype=np.float64)))

    def to_dict(self) -> dict:
        return {"kind": "minmax_linear", **asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping) -> Fusion:
        if data.get("kind", "minmax_linear") != "minmax_linear":
            raise ValueError(f"unknown fusion kind {data.get('kind')!r}")
        return cls(alpha=float(data["alpha"]))


def minmax(x: np.ndarray) -> np.ndarray:
    """Scale to [0, 1]; a constant vector maps to all ones (every candidate ties at the top)."""
    if x.size == 0:
        return x
    lo, hi = float(x.min()), float(x.max())
    if hi - lo < 1e-12:
        return np.ones_like(x)
    return (x - lo) / (hi - lo)


@dataclass
class DevQuery:
    """One dev query's window: candidate ids, their first-stage and model scores, the gold."""

    doc_ids: Sequence[str]
    first_stage: Sequence[float]
    model: Sequence[float]
    gold: Sequence[str]


def ranked(query: DevQuery, fusion: Fusion) -> tuple[list[str], list[float]]:
    fused = fusion.fuse(query.first_stage, query.model)
    order = np.argsort(-fused, kind="stable")
    return [query.doc_ids[i] for i in order], [float(fused[i]) for i in order]


def tune_fusion(dev: Sequence[DevQuery], alphas: Sequence[float] | None = None
                ) -> tuple[Fusion, CutoffPolicy, float]:
    """Grid-search ``alpha`` and the cut-off jointly for the best macro F2 on ``dev``."""
    if not dev:
        raise ValueError("no dev queries to tune on")
    grid = alphas if alphas is not None else [round(0.05 * i, 2) for i in range(21)]
    best: tuple[Fusion, CutoffPolicy, float] = (Fusion(), CutoffPolicy(), -1.0)
    golds = [q.gold for q in dev]
    for alpha in grid:
        fusion = Fusion(alpha)
        policy, f2 = tune_cutoff([ranked(q, fusion) for q in dev], golds, kind="margin")
        if f2 > best[2] + 1e-12:
            best = (fusion, policy, f2)
    return best
