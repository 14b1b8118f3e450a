"""Article-side records: compact encoding, version checks, and the registry of names."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lexrerank.errors import LexrerankError
from reranker.article_side import (
    article_side_from_record,
    decode_array,
    encode_array,
    precompute_articles,
)
from reranker.registry import checkpoint_path


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_array_round_trip_is_exact(dtype: type) -> None:
    array = np.random.default_rng(0).standard_normal((3, 5)).astype(dtype)
    record = json.loads(json.dumps(encode_array(array)))
    back = decode_array(record)
    assert back.dtype == array.dtype and back.shape == (3, 5)
    assert np.array_equal(back, array)
    # Compact: base64 of raw bytes, not a JSON list of floats.
    assert len(record["b64"]) <= 4 * array.nbytes / 3 + 4


def test_corrupt_or_unsupported_arrays_are_refused() -> None:
    record = encode_array(np.zeros((2, 2), dtype=np.float16))
    record["shape"] = [3, 2]
    with pytest.raises(ValueError):
        decode_array(record)
    with pytest.raises(ValueError):
        encode_array(np.zeros(2, dtype=np.int64))


@pytest.fixture(scope="module")
def paraformer(encoder):
    from reranker.paraformer import Paraformer

    return Paraformer(encoder)


def test_paraformer_records_and_version_check(paraformer) -> None:
    articles = [["A minor must obtain consent.", "Otherwise the act is voidable."],
                ["Ownership passes on delivery."]]
    records = precompute_articles(paraformer, articles)
    assert [r["model_version"] for r in records] == [paraformer.model_version] * 2
    side = article_side_from_record(paraformer, json.loads(json.dumps(records[0])))
    assert side.shape == (2, paraformer.dim)
    direct = paraformer.rerank("consent of a minor", paraformer.encode_articles(articles))
    stored = paraformer.rerank("consent of a minor",
                               [article_side_from_record(paraformer, r) for r in records])
    assert np.allclose(direct.scores, stored.scores, atol=1e-6)
    with pytest.raises(LexrerankError, match="recompute"):
        article_side_from_record(paraformer, {**records[0], "model_version": "other"})


def test_registry_names_and_errors(tmp_path) -> None:
    with pytest.raises(LexrerankError, match="unknown reranker"):
        checkpoint_path("bm42")
    (tmp_path / "config.json").write_text("{}")
    assert checkpoint_path(str(tmp_path)) == tmp_path
