"""The architecture as a test: imports go one way, layers only look down, private modules
stay private, and facts about configurations live in the topology registry only.

Every module of `metrics`, `attacks` and `nopeek` is parsed (imports inside functions
count too). Layers, lowest first (README "Design"):

    errors < core < plots, report < data < protocol < defences < training
           < attacking, dishonest, audit, cost < sweeps < cli
"""

from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = [["errors"], ["core"], ["plots", "report"], ["data"], ["protocol"], ["defences"], ["training"],
          ["attacking", "dishonest", "audit", "cost"], ["sweeps"], ["cli"]]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def _modules():
    """{module name: path} of every module of the three packages."""
    out = {}
    for top in ("metrics", "attacks", "nopeek"):
        for folder, _, files in os.walk(os.path.join(ROOT, top)):
            for f in files:
                if f.endswith(".py"):
                    rel = os.path.relpath(os.path.join(folder, f), ROOT)[:-3].replace(os.sep, ".")
                    out[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(folder, f)
    return out


MODULES = _modules()


def _from_module(module: str, path: str, node: ast.ImportFrom) -> str:
    """The absolute name of the module a `from ... import` reads, relative imports resolved."""
    if node.level == 0:
        return node.module or ""
    package = module.split(".") if path.endswith("__init__.py") else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, path: str) -> list[str]:
    """The absolute module names a file imports (for `from a.b import c`: a.b.c when that is a
    module, else a.b; relative imports resolved)."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _from_module(module, path, node)
            for a in node.names:
                full = f"{source}.{a.name}"
                out.append(full if full in MODULES else source)
    return [m for m in out if m.split(".")[0] in ("metrics", "attacks", "nopeek")]


def _private_names(module: str, path: str) -> list[tuple[str, str]]:
    """(source module, name) of every `_name` (not a dunder) a file imports with `from`."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    return [(_from_module(module, path, node), a.name) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
            for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]


GRAPH = {name: sorted(set(_imports(name, path))) for name, path in MODULES.items()}


def _package(module: str) -> str | None:
    """The nopeek sub-package a module belongs to ("errors" for nopeek.errors), None for nopeek itself."""
    parts = module.split(".")
    return parts[1] if parts[0] == "nopeek" and len(parts) > 1 else None


def test_every_nopeek_package_has_a_layer():
    packages = {_package(m) for m in MODULES if _package(m)}
    assert packages == set(LAYER), packages ^ set(LAYER)


def test_metrics_and_attacks_never_import_upwards():
    for module, imports in GRAPH.items():
        top = module.split(".")[0]
        if top == "metrics":
            assert not [i for i in imports if i.split(".")[0] in ("attacks", "nopeek")], module
        if top == "attacks":
            assert not [i for i in imports if i.split(".")[0] == "nopeek"], module


def test_no_import_goes_up_a_layer():
    upward = []
    for module, imports in GRAPH.items():
        mine = _package(module)
        if mine is None:
            continue  # nopeek/__init__ names the API lazily, as strings
        for imported in imports:
            theirs = _package(imported)
            if theirs is None or theirs == mine:
                continue
            if LAYER[theirs] >= LAYER[mine]:
                upward.append(f"{module} -> {imported}")
    assert not upward, upward


def test_no_private_module_is_imported_across_a_package():
    crossing = []
    for module, imports in GRAPH.items():
        for imported in imports:
            parts = imported.split(".")
            private = [i for i, p in enumerate(parts) if p.startswith("_") and p != "__init__"]
            if not private:
                continue
            owner = ".".join(parts[: private[0]])  # the package whose private module it is
            if not (module == owner or module.startswith(owner + ".")):
                crossing.append(f"{module} -> {imported}")
    assert not crossing, crossing


def _unit(module: str) -> str:
    """What a private name is private to: a nopeek sub-package, or the whole of metrics or attacks."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "nopeek" and len(parts) > 1 else parts[0]


def test_no_private_name_is_imported_across_a_package():
    crossing = [f"{module} imports {name} from {source}" for module, path in MODULES.items()
                for source, name in _private_names(module, path)
                if source.split(".")[0] in ("metrics", "attacks", "nopeek") and _unit(source) != _unit(module)]
    assert not crossing, crossing


def test_relative_imports_are_resolved():
    """The checks above see `from ..training import x` as nopeek.training (a test of the test)."""
    node = ast.parse("from ..training import x\nfrom . import y").body
    assert _from_module("nopeek.core._keys", "nopeek/core/_keys.py", node[0]) == "nopeek.training"
    assert _from_module("nopeek.core", "nopeek/core/__init__.py", node[1]) == "nopeek.core"


def test_no_import_cycle():
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for nxt in GRAPH.get(node, ()):
            nxt = nxt if nxt in GRAPH else next((m for m in GRAPH if nxt.startswith(m + ".")), None)
            if nxt is None:
                continue
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for module in GRAPH:
        if module not in state:
            visit(module, [module])
    # A package's __init__ importing its own modules, which import each other, is not a cycle
    # unless a module imports its package's __init__ back.
    assert not cycles, cycles


def _compared_strings(path: str) -> list[tuple[int, str]]:
    """String constants in comparisons (==, !=, in, not in) of a file: (line, value)."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for side in [node.left, *node.comparators]:
                values = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
                out += [(node.lineno, v.value) for v in values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
    return out


def test_no_configuration_is_named_outside_the_topology_registry():
    from nopeek.protocol import TOPOLOGIES

    found = []
    for module, path in MODULES.items():
        if module.startswith("nopeek.protocol"):
            continue
        found += [f"{module}:{line} {value!r}" for line, value in _compared_strings(path) if value in TOPOLOGIES]
    assert not found, found


@pytest.mark.parametrize("name", ["z1", "z2", "z_1", "[all]"])
def test_no_tensor_name_is_parsed_outside_the_protocol(name):
    """Which cut a message crosses, and whose gradient the label attacks read, are facts the
    configuration's builder returns (`Built.cut_of`, `Built.label_gradient`)."""
    found = []
    for module, path in MODULES.items():
        if module.startswith("nopeek.protocol"):
            continue
        found += [f"{module}:{line}" for line, value in _compared_strings(path) if value == name]
    assert not found, found
