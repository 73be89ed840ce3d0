"""The package's layers run downward only, and its files stay short enough to read.

Layers, top to bottom (DESIGN.md): cli → engine → evaluation / export → detector →
loss / models / checkpoint / data → io / priors / ops (and the leaf helpers). A module may import
from its own layer and any layer below it, never from one above — not even lazily inside a function.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ssdfast"

#: Top-level part of the package -> its layer (higher imports lower).
LAYERS = {
    "cli": 7, "demo": 7, "check": 7, "__main__": 7,
    "engine": 6,
    "evaluation": 5, "export": 5,
    "detector": 4,
    "loss": 3, "models": 3, "checkpoint": 3, "data": 3,
    "io": 2, "priors": 2, "ops": 2, "threads": 2, "visualize": 2, "device": 2,
    "_C": 1,
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


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_files_stay_readable(path):
    lines = path.read_text(encoding="utf-8").count("\n")
    if lines <= MAX_LINES:
        return
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    assert "Long file:" in doc, f"{lines} lines: split it by concern, or say why in its docstring ('Long file: ...')"
