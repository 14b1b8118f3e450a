"""What a reindex job reads before it builds anything: the corpus and the models.

The corpus is parsed once in full (:func:`validate_corpus`: a malformed file fails here,
``file:line: reason``, before any index is created) and hashed; the models are described
from their checkpoint configs (:class:`ModelSpec`), never loaded. Both are recorded in the
new index's job record, and a re-run resumes only a version built from the same checksum
and model versions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from indexer.articles import Article
from lexrerank.errors import LexrerankError


@dataclass(frozen=True)
class ModelSpec:
    """A model as the job records it: read from its checkpoint config, never loaded here."""

    name: str  # what workers are asked to load (a shipped name or a checkpoint directory)
    kind: str
    model_version: str
    encoder: str | None
    encoder_fingerprint: str | None
    weights_sha256: str | None

    @classmethod
    def from_checkpoint(cls, name: str, language: str | None = None,
                        model_dir: Path | None = None, backend: str = "torch") -> ModelSpec:
        """The spec of checkpoint ``name`` as the workers serve it on encoder ``backend``
        (``LEXRERANK_ENCODER_BACKEND``: the backend is part of the model version).

        Raises :class:`LexrerankError` for a checkpoint that records no kind/version.
        """
        from reranker.checkpoint import read_config, served_model_version
        from reranker.registry import checkpoint_path

        config = read_config(checkpoint_path(name, language, model_dir))
        if not config.get("model_version") or not config.get("kind"):
            raise LexrerankError(f"checkpoint of {name!r} records no kind/model_version; "
                                 "re-save it with `lexrerank train`")
        return cls(name, config["kind"], served_model_version(config, backend),
                   config.get("encoder"), config.get("encoder_fingerprint"),
                   config.get("weights_sha256"))


def job_models(names: list[str], language: str, model_dir: Path | None = None,
               backend: str = "torch") -> list[ModelSpec]:
    """The models named, for ``language`` (checkpoints under ``model_dir`` first); an
    ensemble stands for its members (whose vectors it needs). Duplicates dropped, order
    kept."""
    from reranker.registry import member_names

    members = [m for name in names for m in member_names(name, language, model_dir)]
    return [ModelSpec.from_checkpoint(m, language, model_dir, backend)
            for m in dict.fromkeys(members)]


@dataclass
class CorpusSource:
    """The validated corpus, as recorded in the job record (``longest`` left out)."""

    path: str
    sha256: str
    fmt: str | None
    language: str
    articles: int
    sentences: int
    # doc id -> characters of its longest sentence: chunks group articles of similar length
    # (the encoder pads each batch to its longest sentence). Not recorded in the index.
    longest: dict[str, int] = field(default_factory=dict, repr=False)


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes (hex)."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def validate_corpus(path: Path, articles: Callable[[], Iterable[Article]],
                    language: str | None) -> CorpusSource:
    """Parse the whole corpus once (raising ``file:line: reason`` on the first bad record).

    Raises :class:`LexrerankError` for a duplicate article id or a corpus without articles.
    """
    longest: dict[str, int] = {}
    sentences = 0
    first_language = None
    for article in articles():
        if article.doc_id in longest:
            raise LexrerankError(f"{path}: duplicate article id {article.doc_id!r}; ids must "
                                 "be unique")
        longest[article.doc_id] = max((len(s) for s in article.sentences), default=0)
        sentences += len(article.sentences)
        first_language = first_language or article.language
    if not longest:
        raise LexrerankError(f"{path}: the corpus holds no live articles; nothing to index")
    return CorpusSource(str(path.resolve()), file_sha256(path), None,
                        language or first_language or "en", len(longest), sentences, longest)
