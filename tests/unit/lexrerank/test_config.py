"""Settings are declared once (lexrerank/config.py) and read from the environment only there."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from lexrerank import config
from lexrerank.config import Settings, declarations, get_settings
from lexrerank.errors import LexrerankError

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("lexrerank", "reranker", "indexer", "gateway", "worker")
# Modules that read os.environ on purpose (lexrerank/config.py's docstring says why).
# Writing a variable for a child process, or passing the environment on, is not a read.
ENVIRONMENT_READERS = {
    "lexrerank/config.py": "the settings module itself",
    "worker/device.py": "reads CUDA's own CUDA_VISIBLE_DEVICES",
}
READ = re.compile(r"os\.environ\.get\(|os\.getenv\(|\bin os\.environ\b"
                  r"|os\.environ\[[^\]]+\](?!\s*=[^=])")


def test_the_readme_tables_are_the_generated_ones() -> None:
    readme = (ROOT / "README.md").read_text()
    assert config.with_readme_tables(readme) == readme, (
        "README's configuration tables are stale: run python -m lexrerank.config --readme "
        "README.md")


def test_every_setting_is_declared_with_a_variable_and_a_doc() -> None:
    envs = [declared.env for _, declared in declarations()]
    assert len(envs) == len(set(envs)) == len(dataclasses.fields(Settings))
    for f, declared in declarations():
        assert re.fullmatch(r"[A-Z][A-Z0-9_]+", declared.env), f.name
        assert declared.doc and declared.group in config.GROUPS, f.name


def test_defaults_without_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for _, declared in declarations():
        monkeypatch.delenv(declared.env, raising=False)
    monkeypatch.delenv("LEXRERANK_API_KEYS_FILE", raising=False)
    assert get_settings() == Settings()
    assert Settings().rerank_timeout_ms == 1000 and Settings().worker_preload is False


def test_values_are_parsed_by_type(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LEXRERANK_RERANK_TIMEOUT_MS", " 250 ")
    monkeypatch.setenv("OPENSEARCH_VERIFY_CERTS", "no")
    monkeypatch.setenv("LEXRERANK_WORKER_PRELOAD", "1")
    monkeypatch.setenv("LEXRERANK_MODELS", "a, b,,")
    monkeypatch.setenv("LEXRERANK_MODEL_DIR", str(tmp_path))
    monkeypatch.setenv("LEXRERANK_INDEX", "")  # empty: the default
    settings = get_settings()
    assert settings.rerank_timeout_ms == 250
    assert settings.opensearch_verify_certs is False and settings.worker_preload is True
    assert settings.extra_models == ("a", "b")
    assert settings.model_dir == tmp_path
    assert settings.index == "statutes"


@pytest.mark.parametrize(("env", "value", "says"), [
    ("LEXRERANK_MAX_WINDOW", "ten", "is not an integer"),
    ("LEXRERANK_MAX_WINDOW", "0", "below its minimum 1"),
    ("LEXRERANK_MAX_CONNECTIONS", "-1", "below its minimum 0"),
    ("LEXRERANK_TORCH_THREADS", "0", "below its minimum 1"),
])
def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, env: str, value: str,
                                      says: str) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(LexrerankError, match=f"{env}=.*{says}"):
        get_settings()


def test_secrets_are_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENSEARCH_PASSWORD", "hunter2")
    monkeypatch.setenv("LEXRERANK_API_KEYS", "k1,k2")
    settings = get_settings()
    assert settings.api_keys == ("k1", "k2")
    assert "hunter2" not in repr(settings) and "k1" not in repr(settings)


def test_the_environment_is_read_only_in_the_settings_module() -> None:
    readers = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if READ.search(path.read_text()):
                readers.add(path.relative_to(ROOT).as_posix())
    assert readers <= set(ENVIRONMENT_READERS), sorted(readers - set(ENVIRONMENT_READERS))


def test_the_read_pattern_finds_reads_and_not_writes() -> None:
    for read in ('os.environ.get("X")', 'os.environ["X"]', 'os.getenv("X")',
                 '"X" in os.environ', 'os.environ["X"] == "1"'):
        assert READ.search(read), read
    for write in ('os.environ["X"] = "1"', 'os.environ.setdefault("X", "1")',
                  'env = {**os.environ, "X": "1"}'):
        assert not READ.search(write), write
