"""The unit of the corpus: one statute article, as every parser yields it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Article:
    """One live (not deleted) statute article.

    ``doc_id`` is the stable document id in the index: for COLIEE the article number
    (``"3-2"``), for ALQAC ``reranker.datasets.alqac_doc_id(law_id, article_id)``, for JSONL
    the ``id`` field. ``sentences`` are the article's paragraphs/items as the rerankers see them
    (never empty: an article with no text is a parse error). ``headings`` maps a level name
    (``part``, ``chapter``, ``section``, ``subsection``, ``division``) to its heading text.
    """

    doc_id: str
    text: str
    sentences: tuple[str, ...]
    language: str = "en"
    law_id: str | None = None
    article_id: str | None = None
    caption: str | None = None
    headings: dict[str, str] = field(default_factory=dict)

    def to_source(self) -> dict:
        """The OpenSearch ``_source`` of this article (without model vectors)."""
        src = asdict(self)
        src["sentences"] = list(self.sentences)
        return src
