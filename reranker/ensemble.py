"""Ensemble: BM25 and several rerankers fused in one rerank (Paraformer + Attentive CNN).

An ensemble checkpoint is a directory with only a ``config.json``::

    {"kind": "ensemble", "format_version": 1, "languages": ["en"],
     "members": {"paraformer": "../paraformer", "attentive-cnn": "../attentive-cnn"},
     "fusion": {"kind": "minmax_weighted", "weights": {"bm25": .3, "paraformer": .4, ...}},
     "cutoff": {...}, "training": {...how the weights were chosen...}}

Member paths are relative to the ensemble directory. Each member keeps its own stored article
vectors (its own model version), so an index that holds the members' vectors can be reranked
by the ensemble without computing anything new. The query is encoded once per member; the
scores are min-max normalised within the window and fused with the first-stage score by the
ensemble's :class:`reranker.fusion.WeightedFusion`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from reranker.attentive_cnn import AttentiveCNNReranker
from reranker.dense import DenseReranker
from reranker.errors import LexrerankError
from reranker.fusion import FIRST_STAGE, WeightedFusion
from reranker.paraformer import Paraformer
from reranker.types import EncodedQuery

__all__ = ["Ensemble", "EnsembleQuery"]

Member = Paraformer | AttentiveCNNReranker | DenseReranker


@dataclass
class EnsembleQuery:
    """A query encoded by every member: ``parts[name]`` is that member's :class:`EncodedQuery`."""

    parts: dict[str, EncodedQuery] = field(default_factory=dict)

    @property
    def truncated(self) -> bool:
        return any(part.truncated for part in self.parts.values())


class Ensemble:
    """Several loaded rerankers and the fusion of their scores with the first stage.

    Args:
        members: member name (a signal name of ``fusion``) -> loaded reranker.
        fusion: weights of ``bm25`` and of each member.
    """

    kind: ClassVar[str] = "ensemble"

    def __init__(self, members: Mapping[str, Member], fusion: WeightedFusion) -> None:
        if not members:
            raise LexrerankError("an ensemble needs at least one member")
        unknown = sorted(set(fusion.as_dict) - set(members) - {FIRST_STAGE})
        if unknown:
            raise LexrerankError(f"the ensemble's fusion weighs {unknown}, which are not "
                                 f"members ({sorted(members)})")
        self.members = dict(members)
        self.fusion = fusion
        self.checkpoint_config: dict[str, Any] = {}

    @property
    def model_version(self) -> str:
        """A hash of the members' versions and the fusion (the stored vectors are the members')."""
        digest = hashlib.sha256()
        for name in sorted(self.members):
            digest.update(f"{name}={self.members[name].model_version};".encode())
        digest.update(repr(self.fusion.weights).encode())
        return digest.hexdigest()[:16]

    @property
    def device(self) -> Any:
        return next(iter(self.members.values())).device

    def prepare_query(self, query: str) -> EnsembleQuery:
        """Encode ``query`` once per distinct encoder: a Paraformer and a dense model that
        share one (loaded once by :func:`reranker.checkpoint.load_reranker`) share its
        encoding, the Attentive CNN encodes with its own tower."""
        parts: dict[str, EncodedQuery] = {}
        by_encoder: dict[int, EncodedQuery] = {}
        for name, member in self.members.items():
            if isinstance(member, (Paraformer, DenseReranker)):
                key = id(member.encoder)
                if key not in by_encoder:
                    by_encoder[key] = member.prepare_query(query)
                parts[name] = by_encoder[key]
            else:
                parts[name] = member.prepare_query(query)
        return EnsembleQuery(parts)
