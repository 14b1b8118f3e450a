"""The search-pipeline plugin's install bookkeeping in lexrerank/stack.py (no OpenSearch)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from lexrerank import stack
from lexrerank.config import get_settings


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    source = tmp_path / "plugin"
    (source / "src" / "main").mkdir(parents=True)
    (source / "src" / "test").mkdir(parents=True)
    (source / "build.sh").write_text("exit 0\n")
    (source / "src" / "main" / "A.java").write_text("class A {}\n")
    monkeypatch.setattr(stack, "PIPELINE_PLUGIN_DIR", source)
    return source


def test_the_build_id_follows_the_sources_not_the_tests_or_docs(plugin_dir: Path) -> None:
    first = stack.pipeline_plugin_build_id()
    (plugin_dir / "README.md").write_text("docs")
    (plugin_dir / "src" / "test" / "T.java").write_text("class T {}")
    assert stack.pipeline_plugin_build_id() == first
    (plugin_dir / "src" / "main" / "A.java").write_text("class A { int x; }\n")
    assert stack.pipeline_plugin_build_id() != first


def test_a_current_install_is_left_alone(plugin_dir: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    installed = home / "plugins" / stack.PIPELINE_PLUGIN
    installed.mkdir(parents=True)
    assert not stack.pipeline_plugin_current(home)
    (installed / stack.PIPELINE_BUILD_ID_FILE).write_text(stack.pipeline_plugin_build_id())
    assert stack.pipeline_plugin_current(home)
    settings = replace(get_settings(), cache_dir=tmp_path / "cache")
    assert stack.install_pipeline_plugin(settings, home) is False  # nothing built or run


def test_the_default_pipeline_pairs_both_processors() -> None:
    definition = stack.search_pipeline_definition("http://127.0.0.1:8000")
    assert definition["request_processors"] == [{"lexrerank": {}}]
    assert definition["response_processors"] == [
        {"lexrerank": {"service_url": "http://127.0.0.1:8000"}}]
