"""The Attentive CNN's words: its vocabulary, tokeniser and query sentence splitting.

Tokenisation is language-agnostic (:meth:`WordVocab.tokenize`); the vocabulary is stored in a
checkpoint as ``vocab.json`` (:meth:`WordVocab.to_json`, no pickle). A query given as one
string is split into sentences by :func:`split_query_sentences`.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence

from reranker.errors import LexrerankError

__all__ = ["WordVocab", "split_query_sentences"]

# Han ideographs and kana: Japanese/Chinese do not separate words with spaces, so each
# character is one token. Hangul is space-separated and stays in \w+ runs.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
_TOKEN_RE = re.compile(f"[{_CJK}]|[^\\W{_CJK}]+")
# Sentence ends for queries given as one string: Latin and CJK full stops, ?, !, newlines.
_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])|\n+")


def split_query_sentences(text: str) -> list[str]:
    """Split a query given as one string into sentences, for the Attentive CNN's sentence
    attention (light rules: Latin and CJK full stops, ?, !, newlines; the same for training
    and serving). Never empty: a text without a sentence end is one sentence."""
    parts = [p.strip() for p in _SENTENCE_RE.split(text)]
    return [p for p in parts if p] or [text.strip()]


class WordVocab:
    """A word vocabulary with language-agnostic tokenisation.

    Tokenisation: Unicode NFC (Vietnamese text arrives both composed and decomposed), lower
    case, then regex ``\\w+`` words, with every CJK character its own token. Id 0 is padding,
    id 1 is unknown.
    """

    PAD, UNK = 0, 1
    PAD_TOKEN, UNK_TOKEN = "<pad>", "<unk>"
    FORMAT = "lexrerank.word_vocab/1"

    def __init__(self, tokens: Sequence[str]) -> None:
        if list(tokens[:2]) != [self.PAD_TOKEN, self.UNK_TOKEN]:
            raise LexrerankError("a WordVocab's first two tokens must be '<pad>' and '<unk>'")
        self.tokens: list[str] = list(tokens)
        self.index: dict[str, int] = {t: i for i, t in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            raise LexrerankError("a WordVocab must not contain duplicate tokens")

    @staticmethod
    def tokenize(text: str) -> list[str]:
        """Split text into lower-case word tokens (CJK: one character per token)."""
        return _TOKEN_RE.findall(unicodedata.normalize("NFC", text).lower())

    @classmethod
    def build(cls, texts: Iterable[str], min_freq: int = 1, max_size: int = 50000) -> WordVocab:
        """Keep the ``max_size - 2`` most frequent tokens seen at least ``min_freq`` times.

        Ties break alphabetically so the same corpus always gives the same ids.
        """
        counts = Counter(tok for text in texts for tok in cls.tokenize(text))
        ranked = sorted((c, t) for t, c in counts.items() if c >= min_freq)
        ranked.sort(key=lambda ct: (-ct[0], ct[1]))
        kept = [t for _, t in ranked[: max(max_size - 2, 0)]]
        return cls([cls.PAD_TOKEN, cls.UNK_TOKEN, *kept])

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self.index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WordVocab) and other.tokens == self.tokens

    def ids(self, text: str, max_tokens: int | None = None) -> list[int]:
        """Token ids of ``text`` (unknown words -> 1), cut to ``max_tokens``."""
        toks = self.tokenize(text)
        if max_tokens is not None:
            toks = toks[:max_tokens]
        return [self.index.get(t, self.UNK) for t in toks]

    def to_json(self) -> str:
        """A JSON document (no pickle) that :meth:`from_json` reads back."""
        return json.dumps({"format": self.FORMAT, "tokens": self.tokens}, ensure_ascii=False)

    @classmethod
    def from_json(cls, data: str | dict) -> WordVocab:
        obj = json.loads(data) if isinstance(data, str) else data
        if not isinstance(obj, dict) or obj.get("format") != cls.FORMAT:
            raise LexrerankError(f"not a word vocabulary (expected format {cls.FORMAT!r})")
        return cls(obj["tokens"])
