"""The architecture's line: nothing under ``protocol/`` touches threads, time, I/O or chance.

Pure cores get their time from commands and their randomness from the host, so whole
clusters can be simulated deterministically. This test reads every module's imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROTOCOL = Path(__file__).resolve().parent.parent / "protocol"
FORBIDDEN = {
    "pykka", "zmq", "socket", "threading", "time", "os", "sqlite3", "random",
    "asyncio", "subprocess", "multiprocessing", "concurrent", "selectors", "_thread",
}  # fmt: skip


def imported_roots(source: str) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            roots.add("__import__")  # dynamic imports would hide what we check
    return roots


MODULES = sorted(PROTOCOL.rglob("*.py"))


def test_protocol_has_modules() -> None:
    assert len(MODULES) >= 2


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PROTOCOL)))
def test_protocol_module_imports_nothing_impure(path: Path) -> None:
    bad = imported_roots(path.read_text()) & (FORBIDDEN | {"__import__"})
    assert not bad, f"{path} imports {sorted(bad)}"


def test_checker_catches_each_forbidden_form() -> None:
    assert "time" in imported_roots("import time")
    assert "os" in imported_roots("from os import path")
    assert "zmq" in imported_roots("import zmq.asyncio as z")
    assert "__import__" in imported_roots("__import__('socket')")
    assert imported_roots("from . import codec") == set()
