"""The package's shape: imports in one direction, no private names across modules, short modules
and functions, and no work or flags at import time. Reads the source only (fast)."""

import ast

import pytest

from conftest import ROOT

PACKAGE = ROOT / "jaxdigits"
MODULES = {p.stem: p for p in sorted(PACKAGE.glob("*.py")) if p.stem != "__init__"}
TREES = {name: ast.parse(path.read_text()) for name, path in MODULES.items()}
# The training stack, lowest first: a module here never imports one after it.
CORE = ("config", "data", "inputs", "backend", "models", "step", "drivers", "scoring", "runs",
        "members", "many", "train", "evaluate", "export", "serve")


def imports(tree: ast.Module) -> list[tuple[str, list[str]]]:
    """(jaxdigits module, names taken from it) for every import, function bodies included."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            names = [a.name for a in node.names]
            if parts[0] == "jaxdigits" and len(parts) > 1:
                found.append((parts[1], names))
            elif node.module == "jaxdigits":
                found += [(name, []) for name in names if name in MODULES]
        elif isinstance(node, ast.Import):
            found += [(a.name.split(".")[1], []) for a in node.names
                      if a.name.startswith("jaxdigits.")]
    return found


GRAPH = {name: {m for m, _ in imports(tree) if m in MODULES} for name, tree in TREES.items()}


def test_no_import_cycles():
    state = {}  # name -> "visiting" or "done"

    def visit(name, path):
        if state.get(name) == "visiting":
            pytest.fail(f"import cycle: {' -> '.join(path[path.index(name):] + [name])}")
        if state.get(name) != "done":
            state[name] = "visiting"
            for dep in sorted(GRAPH[name]):
                visit(dep, path + [name])
            state[name] = "done"

    for name in GRAPH:
        visit(name, [])


def test_the_training_stack_imports_downwards_only():
    for i, name in enumerate(CORE):
        above = GRAPH[name] & set(CORE[i + 1:])
        assert not above, f"{name} imports {sorted(above)}, which sit above it"


def test_no_private_names_across_modules():
    bad = []
    for name, tree in TREES.items():
        bad += [f"{name} <- {m}.{n}" for m, names in imports(tree) for n in names
                if n.startswith("_") and not n.startswith("__")]
        bad += [f"{name} <- {node.value.id}.{node.attr}" for node in ast.walk(tree)
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in MODULES and node.value.id != name
                and node.attr.startswith("_") and not node.attr.startswith("__")]
    assert not bad


def test_modules_and_functions_are_short():
    long_modules = [f"{n}.py: {len(p.read_text().splitlines())} lines" for n, p in MODULES.items()
                    if len(p.read_text().splitlines()) > 300]
    long_functions = [f"{n}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
                      for n, tree in TREES.items() for node in ast.walk(tree)
                      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.end_lineno - node.lineno + 1 > 60]
    assert not long_modules and not long_functions


def test_nothing_defines_flags_or_parses_at_import_time():
    """Module-level statements are imports, definitions and constants; flags are defined inside
    functions that only the `__main__` entry points call."""
    for name, tree in TREES.items():
        for node in tree.body:
            if isinstance(node, ast.If) and "__name__" in ast.unparse(node.test):
                continue  # The entry point.
            calls = [ast.unparse(c.func) for c in ast.walk(node) if isinstance(c, ast.Call)
                     and not _inside_definition(node, c)]
            assert not [c for c in calls if "DEFINE" in c or c.endswith("app.run")], (name, calls)


def _inside_definition(top, call) -> bool:
    """Whether `call` sits inside a function or lambda under `top` (so it runs only when called)."""
    for node in ast.walk(top):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and any(
                c is call for c in ast.walk(node)):
            return True
    return False
