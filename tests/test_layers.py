"""The package's layers run downward only, no module imports itself back, and its files stay short
enough to read.

Layers, top to bottom (README.md's "Development" section): cli → engine → evaluation / export → detector →
loss / models / model_files / data → io / priors / ops (and the leaf helpers; model_files may import
models, never the reverse: no cycle). A module may import
from its own layer and any layer below it, never from one above — not even lazily inside a function.

No import cycle: no module imports, even lazily inside a function, a module that imports it back
(through any chain). ``from . import x`` is an import of the submodule ``x`` when there is one, else
of the package's ``__init__``; a package's ``__init__`` re-exports its submodules, so a submodule that
imports from its own package's ``__init__`` closes a cycle. Imports under ``if TYPE_CHECKING:`` never
run and are left out.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ssdfast"

#: Top-level part of the package -> its layer (higher imports lower).
LAYERS = {
    "cli": 7, "demo": 7, "check": 7, "__main__": 7,
    "engine": 6,
    "evaluation": 5, "export": 5, "runtimes": 5,
    "detector": 4,
    "loss": 3, "models": 3, "model_files": 3, "data": 3,
    "io": 2, "priors": 2, "ops": 2, "threads": 2, "visualize": 2, "device": 2,
    "_C": 1, "errors": 1, "_lazy": 1,
}

#: Longest a file under ssdfast/ may be without saying why in its opening docstring ("Long file: ...").
MAX_LINES = 450


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _part(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def _imported_parts(path: Path) -> list[tuple[int, str]]:
    """``(line, top-level part of ssdfast)`` for every import of the package in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if package[-1] == "__init__":
        package = package[:-1]
    else:
        package = package[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
                names = [module] if node.module else [f"{module}.{alias.name}" for alias in node.names]
            else:
                names = [node.module or ""]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "ssdfast" and len(parts) > 1:
                found.append((node.lineno, parts[1]))
    return found


def test_every_part_has_a_layer():
    unknown = sorted({_part(p) for p in _modules()} - set(LAYERS) - {"__init__"})
    assert not unknown, f"give these parts of ssdfast a layer in tests/test_layers.py: {unknown}"


def test_no_module_imports_from_a_higher_layer():
    upward = []
    for path in _modules():
        part = _part(path)
        if part == "__init__":  # the package face: lazy attributes only
            continue
        for line, target in _imported_parts(path):
            if target in LAYERS and LAYERS[target] > LAYERS[part]:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({part}) imports ssdfast.{target}")
    assert not upward, "imports that run up through the layers:\n" + "\n".join(upward)


def _module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside ``if TYPE_CHECKING:`` blocks (never run)."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skipped


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the ssdfast modules it imports, at module level or inside functions (see the module
    docstring for how ``from X import name`` resolves)."""
    files = sorted(q for q in package.rglob("*.py") if "__pycache__" not in q.parts)
    paths = {_module_name(p, package): p for p in files}

    def existing(name: str) -> str | None:
        while name and name not in paths:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        skipped = _type_checking_only(tree)
        own_package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                found = [existing(alias.name) for alias in node.names if alias.name.split(".")[0] == "ssdfast"]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = ".".join(own_package.split(".")[: len(own_package.split(".")) - (node.level - 1)])
                    base = f"{base}.{node.module}" if node.module else base
                else:
                    base = node.module or ""
                if base.split(".")[0] != "ssdfast":
                    continue
                found = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in paths else existing(base)
                         for alias in node.names]
            else:
                continue
            targets.update(t for t in found if t and t != module)
        graph[module] = targets
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Cycles ``[a, b, ..., a]`` of modules that import each other: in each group of such modules
    (Tarjan's strongly connected components), the shortest cycle through each of its modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)

    cycles = set()
    for group in groups:
        for start in group:
            cycle = _shortest_cycle(graph, group, start)
            first = cycle.index(min(cycle))  # the same cycle found from each of its modules: said once
            cycles.add(tuple(cycle[first:-1] + cycle[:first + 1]))
    return sorted(list(c) for c in cycles)


def _shortest_cycle(graph: dict[str, set[str]], group: set[str], start: str) -> list[str]:
    """A shortest way from ``start`` back to it inside ``group`` (breadth-first)."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & group):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"{start} is in a group of modules importing each other but has no way back")


def test_import_cycles_are_found():
    """The check finds a cycle through a function-level import and one through a package's __init__."""
    graph = {"p.a": {"p.b"}, "p.b": {"p.a"}, "p": {"p.c"}, "p.c": {"p"}, "p.d": {"p.c"}}
    assert import_cycles(graph) == [["p", "p.c", "p"], ["p.a", "p.b", "p.a"]]
    graph = {"m": {"m.x", "m.y"}, "m.x": {"m.y", "m"}, "m.y": {"m.x"}}  # two cycles in one group
    assert import_cycles(graph) == [["m", "m.x", "m"], ["m.x", "m.y", "m.x"]]


def test_import_graph_resolves_lazy_and_package_imports(tmp_path):
    """The old models/ layout: weights and pytorch_ssd import each other (one of them inside a function),
    and pytorch_ssd takes ``create_model`` from its package's ``__init__``; ``from . import registry``
    (a module) and imports under TYPE_CHECKING close no cycle."""
    files = {
        "__init__.py": "",
        "models/__init__.py": "from .pytorch_ssd import read\nfrom .registry import create_model\n",
        "models/registry.py": "def create_model(): pass\n",
        "models/pytorch_ssd.py": "from .weights import load\ndef read():\n    from . import create_model\n",
        "models/weights.py": "def load():\n    from .pytorch_ssd import read\n",
        "models/ssd.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import ssd_user\n",
        "models/ssd_user.py": "from . import registry, ssd\n",
    }
    for name, text in files.items():
        (tmp_path / "ssdfast" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "ssdfast" / name).write_text(text)
    graph = import_graph(tmp_path / "ssdfast")
    assert graph["ssdfast.models.ssd_user"] == {"ssdfast.models.registry", "ssdfast.models.ssd"}
    models, pytorch_ssd, weights = "ssdfast.models", "ssdfast.models.pytorch_ssd", "ssdfast.models.weights"
    assert import_cycles(graph) == [[models, pytorch_ssd, models], [pytorch_ssd, weights, pytorch_ssd]]


def test_no_import_cycle():
    cycles = import_cycles(import_graph())
    assert not cycles, "modules that import each other (even lazily):\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_files_stay_readable(path):
    lines = path.read_text(encoding="utf-8").count("\n")
    if lines <= MAX_LINES:
        return
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    assert "Long file:" in doc, f"{lines} lines: split it by concern, or say why in its docstring ('Long file: ...')"
