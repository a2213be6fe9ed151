"""The package's shape, from its imports (read from the source, nothing is imported):

- two layers, one direction: the core library never imports the application layer;
- the leaves import nothing of ours but other leaves;
- no import cycle between the package's top-level units (subpackages and modules);
- imports of our own modules sit at module level (a function-level one would hide a cycle);
- every module name says once what it holds (no two modules share a name).
"""

import ast
import collections
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "prune_ofa_jax"
# The application layer: the demo, the studies, architecture search, the KD search and
# AutoDistiller, the benchmarks, one-shot pruning, and every command line (`main`, any
# `__main__`).
APPLICATION = {"main", "demo", "study", "nas", "kdsearch", "bench", "prune_once"}
LEAVES = {"errors", "paths", "jsonio", "logs", "cli"}
# Old command spellings kept working (`python -m <old>`): each only forwards to the command
# that replaced it, so it counts as a command line.
COMMAND_ALIASES = {"prune_ofa_jax.study.masks", "prune_ofa_jax.distill.search",
                   "prune_ofa_jax.distill.autodistiller"}


def _modules() -> dict:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(name: str, path: pathlib.Path):
    """(imported module, in a function?, line) for every import of ours in `path`."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            targets = []
            if isinstance(child, ast.Import):
                targets = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    head = package.split(".")[:len(package.split(".")) - child.level + 1]
                    base = ".".join(head + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                           for a in child.names]
            found.extend((t, in_function, child.lineno) for t in targets
                         if t.split(".")[0] == "prune_ofa_jax")
            visit(child, inner)

    visit(ast.parse(path.read_text()), False)
    return found


EDGES = [(src, dst, fn, line) for src, path in MODULES.items()
         for dst, fn, line in _imports(src, path)]


def unit(module: str) -> str:
    """A module's top-level unit: prune_ofa_jax.<unit>[...]."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def is_application(module: str) -> bool:
    return (unit(module) in APPLICATION or module.endswith("__main__")
            or module in COMMAND_ALIASES)


def test_the_core_never_imports_the_application_layer():
    upward = [f"{s}:{line} imports {d}" for s, d, _, line in EDGES
              if not is_application(s) and is_application(d)]
    assert not upward, upward


def test_leaves_import_only_leaves():
    bad = [f"{s}:{line} imports {d}" for s, d, _, line in EDGES
           if unit(s) in LEAVES and unit(d) not in LEAVES]
    assert not bad, bad


def test_no_cycle_between_units():
    graph = collections.defaultdict(set)
    for s, d, _, _ in EDGES:
        if unit(s) != unit(d) and s not in COMMAND_ALIASES:
            graph[unit(s)].add(unit(d))
    state, path = {}, []

    def dfs(u):
        state[u] = "open"
        path.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == "open":
                pytest.fail("import cycle: " + " -> ".join(path[path.index(v):] + [v]))
            if v not in state:
                dfs(v)
        path.pop()
        state[u] = "done"

    for u in sorted(graph):
        if u not in state:
            dfs(u)


def test_our_imports_sit_at_module_level():
    inside = [f"{s}:{line} imports {d} inside a function" for s, d, fn, line in EDGES if fn]
    assert not inside, inside


def test_module_names_are_unique():
    by_name = collections.defaultdict(list)
    for name in MODULES:
        leaf = name.rsplit(".", 1)[-1]
        if leaf not in ("__main__", "prune_ofa_jax") and name not in COMMAND_ALIASES \
                and MODULES[name].name != "__init__.py":
            by_name[leaf].append(name)
    repeated = {k: v for k, v in by_name.items() if len(v) > 1}
    assert not repeated, repeated


def test_the_checks_see_a_planted_violation(tmp_path):
    """The walker finds an upward and a function-level import when there is one."""
    fake = tmp_path / "prune_ofa_jax" / "sparsity" / "bad.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("def f():\n    from prune_ofa_jax.study import harness\n")
    found = _imports("prune_ofa_jax.sparsity.bad", fake)
    assert found == [("prune_ofa_jax.study.harness", True, 2)]
    assert is_application(found[0][0]) and not is_application("prune_ofa_jax.sparsity.bad")
