"""Static checks of the search library: Optuna's public API only, imports without a cycle."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import search

NAMEDTUPLE_API = {"_replace", "_asdict", "_fields", "_make"}  # public despite the underscore


def _private_uses(path: Path) -> list[str]:
    """Optuna private names a module uses: imports of `_` modules or names from optuna,
    `x._name` on anything but self/cls, getattr(x, "_name"), and Optuna's internal
    attribute keys ("...Sampler:generation") spelled out."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        where = f"{path.name}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "optuna":
            parts = node.module.split(".") + [a.name for a in node.names]
            found += [f"{where} from {node.module} import {p}" for p in parts if p.startswith("_")]
        elif isinstance(node, ast.Import):
            found += [f"{where} import {a.name}" for a in node.names if a.name.startswith("optuna") and "._" in a.name]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value.id if isinstance(node.value, ast.Name) else None
            if owner not in ("self", "cls") and node.attr not in NAMEDTUPLE_API:
                found.append(f"{where} .{node.attr}")
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("getattr", "setattr", "hasattr"):
            names = [a.value for a in node.args[1:2] if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            found += [f"{where} getattr {n}" for n in names if n.startswith("_")]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "Sampler:" in node.value:
            found.append(f"{where} key {node.value!r}")
    return found


def test_the_search_library_uses_only_optunas_public_api():
    modules = sorted(Path(search.__file__).parent.rglob("*.py"))
    assert any(p.name == "engine.py" for p in modules)
    used = [u for p in modules for u in _private_uses(p)]
    assert used == [], "Optuna private names in search/: " + "; ".join(used)


def test_the_private_name_check_notices_each_kind(tmp_path):
    """The check above must be able to fail: one line of each kind it looks for."""
    lines = [
        "from optuna.samplers._ga import X",
        "from optuna.samplers import _base",
        "import optuna.samplers._ga",
        "key = sampler._get_generation_key()",
        "getattr(study, '_storage')",
        "KEY = 'NSGAIISampler:generation'",
    ]
    for i, line in enumerate(lines):
        path = tmp_path / f"m{i}.py"
        path.write_text(line + "\n")
        assert len(_private_uses(path)) == 1, line
    ok = tmp_path / "ok.py"
    ok.write_text("self._x = 1\nentry._replace(number=2)\nfrom optuna.samplers import NSGAIISampler\n")
    assert _private_uses(ok) == []


def test_search_modules_import_each_other_without_a_cycle():
    graph = {}
    for path in Path(search.__file__).parent.rglob("*.py"):
        name = ".".join(path.relative_to(Path(search.__file__).parent.parent).with_suffix("").parts)
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("search."):
                deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("search.")}
        graph[name.removesuffix(".__init__")] = deps
    assert graph["search.select"] and graph["search.engine"]
    list(graphlib.TopologicalSorter(graph).static_order())  # raises CycleError on a cycle
