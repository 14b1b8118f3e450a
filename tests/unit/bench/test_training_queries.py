"""bench.services.training_queries: the benchmarks' queries in the index's language."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.services import training_queries
from lexrerank.config import get_settings
from lexrerank.errors import LexrerankError


@pytest.fixture
def data(japanese_data: Path, monkeypatch) -> Path:
    monkeypatch.setenv("LEXRERANK_DATA", str(japanese_data.parent))
    return japanese_data.parent


def _has_kana_or_kanji(text: str) -> bool:
    return any("\u3040" <= c <= "\u30ff" or "\u4e00" <= c <= "\u9fff" for c in text)


def test_each_language_reads_its_own_queries(data: Path) -> None:
    english, japanese = training_queries(5, "en"), training_queries(5, "ja")
    assert len(english) == len(japanese) == 5
    assert not any(_has_kana_or_kanji(q.text) for q in english)
    assert all(_has_kana_or_kanji(q.text) for q in japanese)
    if (data / "alqac2023" / "train.json").is_file():
        vietnamese = training_queries(5, "vi")
        assert len(vietnamese) == 5 and not any(_has_kana_or_kanji(q.text) for q in vietnamese)


def test_a_language_without_queries_is_refused_by_name(data: Path) -> None:
    with pytest.raises(LexrerankError, match="no training queries in 'fr'"):
        training_queries(5, "fr")


def test_missing_data_says_where_it_looked(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LEXRERANK_DATA", str(tmp_path))
    assert get_settings().data_dir == tmp_path
    with pytest.raises(LexrerankError, match="set LEXRERANK_DATA"):
        training_queries(5, "ja")
