"""A plain ``pip install .`` must run: every module ``src/ltfu`` imports is ours, the standard
library's, or comes with a distribution named in ``[project] dependencies``."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _declared() -> set[str]:
    """Declared distributions and what they require in turn (the install brings those too)."""
    names = {re.split(r"[\[<>=!~; ]", d, maxsplit=1)[0]
             for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    todo, seen = list(names), set()
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = requires(name) or []
        except PackageNotFoundError:  # a requirement whose marker excludes this Python
            continue
        for req in reqs:
            if "extra ==" not in req:
                todo.append(re.split(r"[\[<>=!~; (]", req, maxsplit=1)[0])
    return seen


def _optional(tree: ast.AST) -> set[int]:
    """Ids of import nodes guarded by ``try: ... except ImportError`` (optional on purpose)."""
    guarded = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                for h in node.handlers):
            guarded |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return guarded


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    optional = _optional(tree)
    out = set()
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_every_runtime_import_is_a_declared_dependency() -> None:
    declared, dists = _declared(), packages_distributions()
    missing = {}
    for path in sorted((ROOT / "src" / "ltfu").rglob("*.py")):
        for module in _imports(path):
            if module == "ltfu" or module in sys.stdlib_module_names or module == "__future__":
                continue
            providers = {d.lower().replace("_", "-") for d in dists.get(module, [])}
            if not providers & declared:
                missing.setdefault(module, []).append(str(path.relative_to(ROOT)))
    assert not missing, f"imported but not a declared dependency: {missing}"
