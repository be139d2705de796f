"""The shape of the code (docs/architecture.md), checked on the source itself.

- Only the app layer (`app/`) reads configs, prints, or drives rich/W&B; the libraries
  (`ofa`, `predictors`, `search`) change process state only where they restore it.
- Imports point down (app -> search -> predictors -> ofa) and form no cycle.
- Size: no module over 400 lines, no function over 60 lines or with more than 8 parameters.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("ofa", "predictors", "search", "app")  # each may import only those before it
LIBRARIES = LAYERS[:-1]
APP_ONLY_PACKAGES = ("omegaconf", "hydra", "rich", "wandb")
MAX_MODULE_LINES, MAX_FUNCTION_LINES, MAX_PARAMETERS = 400, 60, 8


def modules(*packages: str) -> Iterator[tuple[str, Path, ast.Module]]:
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            yield ".".join(parts), path, ast.parse(path.read_text(), str(path))


def type_checking_nodes(tree: ast.Module) -> set[int]:
    """ids of the nodes under `if TYPE_CHECKING:` (imports that never run)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return out


def imports(name: str, path: Path, tree: ast.Module, known: set[str] = frozenset()) -> Iterator[tuple[str, int]]:
    """(imported module, line) of every import that runs, at module level or inside a function.
    `from package import module` counts as importing the module when `known` lists it."""
    skip = type_checking_nodes(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            yield from ((a.name, node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            submodules = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
            yield from ((m, node.lineno) for m in submodules)
            if len(submodules) < len(node.names):
                yield base, node.lineno


def call_name(node: ast.Call) -> str:
    return ast.unparse(node.func)


def test_only_the_app_layer_imports_config_console_and_wandb_packages():
    found = [
        f"{path.relative_to(ROOT)}:{line} imports {mod}"
        for name, path, tree in modules(*LIBRARIES)
        for mod, line in imports(name, path, tree)
        if mod.split(".")[0] in APP_ONLY_PACKAGES
    ]
    assert not found, "\n".join(found)


def test_libraries_do_not_print_read_configs_or_open_consoles():
    found = []
    for _, path, tree in modules(*LIBRARIES):
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and call_name(node) in ("print", "Console", "pprint"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} calls {call_name(node)}")
            if isinstance(node, ast.Name | ast.Attribute) and ast.unparse(node).endswith("DictConfig"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} uses DictConfig")
    assert not found, "\n".join(found)


# Calls that change process-wide state, and what makes one acceptable in a library.
STATEFUL = {
    "torch.manual_seed": "inside `with torch.random.fork_rng(...)`",
    "torch.set_num_threads": "restored in a `finally:` of the same function",
    "torch.set_num_interop_threads": "never",
    "np.random.seed": "never",
    "numpy.random.seed": "never",
    "random.seed": "never",
    "L.seed_everything": "never",
    "lightning.seed_everything": "never",
    "optuna.logging.set_verbosity": "never",
    "warnings.filterwarnings": "inside `with warnings.catch_warnings()`",
    "warnings.simplefilter": "inside `with warnings.catch_warnings()`",
    "os.umask": "never",
    "OmegaConf.register_new_resolver": "never",
}


def _inside_with(ancestors: list[ast.AST], needle: str) -> bool:
    return any(
        isinstance(a, ast.With) and any(needle in ast.unparse(i.context_expr) for i in a.items) for a in ancestors
    )


def _restored_in_finally(ancestors: list[ast.AST], name: str) -> bool:
    functions = [a for a in ancestors if isinstance(a, ast.FunctionDef | ast.AsyncFunctionDef)]
    if not functions:
        return False
    for node in ast.walk(functions[-1]):
        finally_calls = [n for s in getattr(node, "finalbody", []) for n in ast.walk(s) if isinstance(n, ast.Call)]
        if isinstance(node, ast.Try) and any(call_name(n) == name for n in finally_calls):
            return True
    return False


def _acceptable(name: str, ancestors: list[ast.AST]) -> bool:
    if name == "torch.manual_seed":
        return _inside_with(ancestors, "fork_rng")
    if name == "torch.set_num_threads":
        return _restored_in_finally(ancestors, name)
    if name.startswith("warnings."):
        return _inside_with(ancestors, "catch_warnings")
    return False


def _walk_with_ancestors(node: ast.AST, ancestors: list[ast.AST]) -> Iterator[tuple[ast.AST, list[ast.AST]]]:
    yield node, ancestors
    for child in ast.iter_child_nodes(node):
        yield from _walk_with_ancestors(child, [*ancestors, node])


def test_libraries_change_process_state_only_where_they_restore_it():
    found = []
    for _, path, tree in modules(*LIBRARIES):
        for node, ancestors in _walk_with_ancestors(tree, []):
            if isinstance(node, ast.Call) and call_name(node) in STATEFUL:
                name = call_name(node)
                if not _acceptable(name, ancestors):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {name} (allowed: {STATEFUL[name]})")
    assert not found, "\n".join(found)


def import_graph() -> dict[str, set[str]]:
    all_modules = {name: (path, tree) for name, path, tree in modules(*LAYERS)}
    graph: dict[str, set[str]] = {name: set() for name in all_modules}
    for name, (path, tree) in all_modules.items():
        for mod, _ in imports(name, path, tree, set(all_modules)):
            if mod in all_modules and mod != name:
                graph[name].add(mod)
    return graph


def test_imports_point_down_the_layers():
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    found = [
        f"{name} imports {target}"
        for name, targets in import_graph().items()
        for target in targets
        if rank[target.split(".")[0]] > rank[name.split(".")[0]]
    ]
    assert not found, "\n".join(sorted(found))


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a path that returns to its start), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_import_graph_has_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def parameters(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = fn.args
    names = [p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
    return len(names) - (1 if names and names[0] in ("self", "cls") else 0)


@pytest.mark.parametrize("package", LAYERS)
def test_modules_and_functions_stay_small(package):
    found = []
    for _, path, tree in modules(package):
        rel = path.relative_to(ROOT)
        n_lines = len(path.read_text().splitlines())
        if n_lines > MAX_MODULE_LINES:
            found.append(f"{rel}: {n_lines} lines")
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(f"{rel}:{node.lineno} {node.name}: {length} lines")
                if parameters(node) > MAX_PARAMETERS:
                    found.append(f"{rel}:{node.lineno} {node.name}: {parameters(node)} parameters")
    assert not found, "\n".join(found)
