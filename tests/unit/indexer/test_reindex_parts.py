"""Pure parts of the reindex job: progress records, hit-index resolution, option parsing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.hit_index import hits_index
from gateway.merge import MergeError
from indexer.aliases import check_alias_name, version_name, version_of
from indexer.reindex_inputs import file_sha256, validate_corpus
from lexrerank.errors import InputError, LexrerankError
from lexrerank.reindex_cli import split_models
from lexrerank.reindex_progress import (
    FIELDS,
    TTL_S,
    new_record,
    progress_key,
    read_all_progress,
    write_progress,
)


class DictRedis:
    """The four Redis calls the progress helpers make, over a dict (TTL recorded)."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.ttl: dict[str, int] = {}

    def set(self, key: str, value: str, ex: int | None = None) -> None:
        self.data[key], self.ttl[key] = value, ex

    def get(self, key: str) -> str | None:
        return self.data.get(key)

    def scan_iter(self, match: str, count: int = 10):
        prefix = match.rstrip("*")
        return iter([k for k in self.data if k.startswith(prefix)])

    def mget(self, keys: list[str]) -> list[str | None]:
        return [self.data.get(k) for k in keys]


def test_progress_record_round_trip_with_contract_fields() -> None:
    redis = DictRedis()
    record = new_record("statutes", "statutes-v2", ["paraformer"])
    assert set(record) == set(FIELDS)
    record.update(state="embedding", chunks_total=10, chunks_done=3)
    write_progress(redis, record)
    redis.set("lexrerank:reindex:junk", "not json")
    assert redis.ttl[progress_key("statutes")] == TTL_S
    (read,) = read_all_progress(redis)
    assert read["index"] == "statutes-v2" and read["chunks_done"] == 3
    assert read["updated_at"] >= read["started_at"]


def test_progress_refuses_an_unknown_state() -> None:
    record = new_record("a", "a-v1", [])
    record["state"] = "done"
    with pytest.raises(ValueError, match="state must be one of"):
        write_progress(DictRedis(), record)


def _response(*indexes: str | None) -> dict:
    return {"hits": {"hits": [{"_id": str(i), "_score": 1.0, **({"_index": x} if x else {})}
                              for i, x in enumerate(indexes)]}}


def test_hits_index_names_the_concrete_index() -> None:
    assert hits_index(_response("statutes-v2", "statutes-v2"), 10, "statutes") == "statutes-v2"
    assert hits_index(_response(None), 10, "statutes") == "statutes"
    assert hits_index(_response(), 10, "statutes") == "statutes"
    # Only the window counts.
    assert hits_index(_response("a-v1", "a-v2"), 1, "a") == "a-v1"


def test_hits_from_two_indexes_fall_back_with_a_reason() -> None:
    with pytest.raises(MergeError, match="come from 2 indexes"):
        hits_index(_response("a-v1", "a-v2"), 10, "a")


def test_split_models_accepts_repeats_and_comma_lists() -> None:
    assert split_models(["paraformer,attentive-cnn", "paraformer"], "x") == [
        "paraformer", "attentive-cnn"]
    assert split_models(None, "paraformer") == ["paraformer"]


def test_version_names() -> None:
    assert version_name("statutes", 3) == "statutes-v3"
    assert version_of("statutes", "statutes-v12") == 12
    assert version_of("statutes", "statutes-x-v1") is None
    check_alias_name("statutes.en_2024")
    with pytest.raises(LexrerankError, match="not a valid name"):
        check_alias_name("Statutes*")


def test_validate_corpus_counts_and_hashes(tmp_path: Path) -> None:
    from indexer.parsers import parse_corpus

    path = tmp_path / "c.jsonl"
    rows = [{"id": "a", "text": "One. Two."}, {"id": "b", "text": "Three."}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    source = validate_corpus(path, lambda: parse_corpus(path), None)
    assert source.articles == 2 and source.sha256 == file_sha256(path)
    assert source.language == "en"
    path.write_text(json.dumps(rows[0]) + "\n{bad\n")
    with pytest.raises(InputError, match=r"c\.jsonl:2:"):
        validate_corpus(path, lambda: parse_corpus(path), None)
