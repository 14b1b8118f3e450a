"""The gateway's JSON must read and write documents exactly as the standard library does."""

from __future__ import annotations

import json

import pytest

from gateway import fast_json

DOCUMENTS = [
    b'{"hits": {"hits": [{"_id": "1", "_score": 12.5, "_source": {"text": "\\u6c11\\u6cd5"}}]}}',
    b'{"unsigned": 18446744073709551615, "long": -9223372036854775808}',
    # Beyond 64 bits orjson would read a float: these must stay exact integers.
    b'{"huge": 123456789012345678901234567890, "neg": -98765432109876543210}',
    b'[1.5e-7, 0.1, 1e300, true, null, "x"]',
]


@pytest.mark.parametrize("raw", DOCUMENTS)
def test_reads_like_the_standard_library(raw: bytes) -> None:
    assert fast_json.loads(raw) == json.loads(raw)
    assert fast_json.loads(raw.decode()) == json.loads(raw)


@pytest.mark.parametrize("raw", DOCUMENTS)
def test_writes_what_reads_back_the_same(raw: bytes) -> None:
    value = json.loads(raw)
    written = fast_json.dumps(value)
    assert json.loads(written) == value
    assert b", " not in written and b": " not in written  # compact, like OpenSearch


def test_non_ascii_is_kept_as_utf8() -> None:
    assert fast_json.dumps({"t": "民法"}) == '{"t":"民法"}'.encode()


def test_not_json_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        fast_json.loads(b"{nope")
