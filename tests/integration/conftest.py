"""Integration fixtures: the real OpenSearch and Redis of `lexrerank up` (see .ci/run)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from opensearchpy import OpenSearch

from lexrerank.config import get_settings
from lexrerank.errors import LexrerankError
from lexrerank.opensearch_client import opensearch_client

REPO = Path(__file__).resolve().parents[2]


def data_dir() -> Path:
    return get_settings().data_dir


@pytest.fixture(scope="session")
def client() -> OpenSearch:
    try:
        return opensearch_client(get_settings())
    except LexrerankError as exc:
        pytest.fail(f"{exc} (integration tests need the real stack)")


@pytest.fixture(scope="session")
def coliee_code() -> Path:
    path = data_dir() / "coliee" / "civil_code_en-1to724-2.txt"
    if not path.exists():
        pytest.skip(f"COLIEE data not found at {path} (set LEXRERANK_DATA)")
    return path


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600
            ) -> subprocess.CompletedProcess:
    """Run the real `lexrerank` command line in a subprocess, as a user would."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "lexrerank", *args], capture_output=True,
                          text=True, env=full_env, timeout=timeout, cwd=REPO)


@pytest.fixture(scope="session")
def coliee_index(client: OpenSearch, coliee_code: Path) -> str:
    """A fresh test index holding the COLIEE civil code (the live `statutes` is left alone)."""
    name = "test-coliee"
    client.indices.delete(index=name, ignore_unavailable=True)
    proc = run_cli("index", "--corpus", str(coliee_code), "--index", name)
    assert proc.returncode == 0, proc.stderr
    return name
