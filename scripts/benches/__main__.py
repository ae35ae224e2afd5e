"""Dispatch ``scripts/bench NAME`` to ``scripts/benches/NAME.py:main(argv)``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def available() -> list[str]:
    return sorted(p.stem.replace("_", "-") for p in HERE.glob("*.py") if not p.stem.startswith("_"))


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "--list"):
        print("usage: scripts/bench NAME [ARGS]\nbenchmarks: " + ", ".join(available()))
        return 0 if argv else 2
    name = argv[0].replace("-", "_")
    path = HERE / f"{name}.py"
    if name.startswith("_") or not path.exists():
        print(f"unknown benchmark {argv[0]!r}; have: {', '.join(available())}", file=sys.stderr)
        return 2
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(HERE.parent.parent))
    sys.modules[spec.name] = module  # dataclasses look their module up while decorating
    spec.loader.exec_module(module)
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
