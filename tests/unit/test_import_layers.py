"""Imports point down (docs/architecture.md): the layers' rules, checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    # A pure library: no service, no CLI, no environment (lexrerank/config.py reads that).
    "reranker": {"gateway", "worker", "indexer", "lexrerank", "opensearchpy", "celery",
                 "redis", "kombu"},
    # The read path never imports the write path.
    "gateway": {"indexer"},
}


def imported_modules(path: Path) -> set[str]:
    """Absolute module names ``path`` imports (anywhere in the file, lazily or not)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_point_down(package: str) -> None:
    offending = sorted(
        (path.relative_to(ROOT).as_posix(), name)
        for path in (ROOT / package).rglob("*.py")
        for name in imported_modules(path)
        if name.split(".")[0] in FORBIDDEN[package])
    assert not offending, offending


def test_the_check_sees_lazy_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from indexer.aliases import resolve_concrete\n"
                      "    import worker.tasks\n")
    assert imported_modules(source) == {"indexer.aliases", "worker.tasks"}
