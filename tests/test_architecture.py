"""The package's shape, checked: one direction of imports between layers, no import
cycle between modules, and no module, class or function over the size limits.

Every import counts, wherever it is written: module level, inside a function, or
under ``if TYPE_CHECKING:`` (a type-only import is still a dependency a reader
has to follow). README.md, "Layout", describes the layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import workkit_workflow

PACKAGE = Path(workkit_workflow.__file__).parent
NAME = "workkit_workflow"

LAYERS: dict[str, set[str]] = {
    # what users write
    "errors": set(),
    "definitions": {"errors"},
    # the engine over its ports
    "engine": {"definitions", "errors"},
    # runtime adapters, backends and optional features, over the engine
    "cloudflare": {"engine", "definitions", "errors"},
    "history": {"cloudflare", "engine", "definitions", "errors"},
    "local": {"cloudflare", "engine", "errors"},
    "client": {"cloudflare", "history", "engine", "definitions", "errors"},
    "cfworkflows": {"client", "cloudflare", "engine", "definitions", "errors"},
}
"""Which layers each layer may import (besides itself). Everything else at the top
level (``__init__``, ``__main__``, ``cli``, ``demo``, ``testing``, ``http``) is tooling and the
public surface: it may import any layer, and no layer imports it."""

TOOLING = {"__init__", "__main__", "cli", "demo", "testing", "http"}
TOOLING_MODULES = {
    # ``workkit-workflow serve`` with ``--app``: the CLI's dev server, which runs a local
    # runtime and its client; it lives with the history pages it serves.
    "workkit_workflow.history._server",
}

MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 300
MAX_FUNCTION_LINES = 60

OVERSIZE_ALLOWED: dict[str, set[str]] = {}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join([NAME, *parts])] = path
    return found


MODULES = _modules()


def _package_of(module: str, path: Path) -> list[str]:
    parts = module.split(".")
    return parts if path.name == "__init__.py" else parts[:-1]


def _imports(module: str, path: Path) -> set[str]:
    """The package's modules that ``module`` imports, anywhere in its body."""
    package = _package_of(module, path)
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            stem = ".".join([*base, *(node.module.split(".") if node.module else [])])
            # ``from pkg import sub`` imports the submodule ``pkg.sub``; else ``pkg`` itself.
            names = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in MODULES else stem for a in node.names]
        else:
            continue
        targets.update(name for name in names if name in MODULES and name != module)
    return targets


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_the_graph_sees_imports_of_every_kind() -> None:
    """Guards the parser: a type-only import and a function-level one are both edges."""
    assert "workkit_workflow.definitions._contexts" in GRAPH["workkit_workflow.definitions._workflow"]
    assert "workkit_workflow.history" in GRAPH["workkit_workflow.client._client"]
    assert "workkit_workflow.engine._journal" in GRAPH["workkit_workflow.engine._state"]


def test_every_module_belongs_to_a_layer() -> None:
    assert {_layer(m) for m in MODULES} <= set(LAYERS) | TOOLING


def test_imports_follow_the_layers() -> None:
    against = sorted(
        f"{module} -> {target}"
        for module, targets in GRAPH.items()
        for target in targets
        if _layer(module) in LAYERS
        and module not in TOOLING_MODULES
        and _layer(target) != _layer(module)
        and _layer(target) not in LAYERS[_layer(module)]
    )
    assert against == []


def test_no_import_cycle() -> None:
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)
    assert cycles == []


def _oversize(path: Path) -> list[tuple[str, int]]:
    text = path.read_text()
    found = []
    lines = len(text.splitlines())
    if lines > MAX_MODULE_LINES:
        found.append(("module", lines))
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            assert node.end_lineno is not None
            size = node.end_lineno - node.lineno + 1
            limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
            if size > limit:
                found.append((node.name, size))
    return found


@pytest.mark.parametrize("module", sorted(MODULES))
def test_sizes(module: str) -> None:
    path = MODULES[module]
    allowed = OVERSIZE_ALLOWED.get(path.relative_to(PACKAGE).as_posix(), set())
    assert [(name, size) for name, size in _oversize(path) if name not in allowed] == []


def test_the_size_check_measures(tmp_path: Path) -> None:
    """Guards the size check itself: the exemptions are still needed, and a big node is seen."""
    for name, allowed in OVERSIZE_ALLOWED.items():
        assert {found for found, _ in _oversize(PACKAGE / name)} == allowed, name
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    big = tmp_path / "big.py"
    big.write_text(f"def long():\n{body}\n\ndef short():\n    return 1\n")
    assert _oversize(big) == [("long", MAX_FUNCTION_LINES + 1)]


SHARED_KEYS_MAX = 30
"""Instance attributes whose keys CPython shares among a class's instances (3.11 to 3.13):
an instance given more holds a dict of its own, about 1.6 KB, and every attribute read
looks in it."""


def _assigned(cls: type, trees: dict[str, ast.Module]) -> set[str]:
    """The ``self.<name>`` attributes the methods of ``cls`` assign (a class of the package)."""
    if cls.__module__ not in trees:
        trees[cls.__module__] = ast.parse(MODULES[cls.__module__].read_text())
    names: set[str] = set()
    for node in ast.walk(trees[cls.__module__]):
        if isinstance(node, ast.ClassDef) and node.name == cls.__name__:
            for sub in ast.walk(node):
                if isinstance(sub, ast.Assign):
                    targets = sub.targets
                elif isinstance(sub, (ast.AnnAssign, ast.AugAssign)):
                    targets = [sub.target]
                else:
                    continue
                for part in (part for target in targets for part in ast.walk(target)):
                    # ``self.a, self.b = ...`` assigns both.
                    if isinstance(part, ast.Attribute) and getattr(part.value, "id", "") == "self":
                        names.add(part.attr)
    return names


def test_no_class_gives_its_instances_more_attributes_than_cpython_shares() -> None:
    import importlib
    import inspect

    trees: dict[str, ast.Module] = {}
    over = {}
    for module in MODULES:
        for _, cls in inspect.getmembers(importlib.import_module(module), inspect.isclass):
            if cls.__module__ != module:
                continue
            ours = [c for c in cls.__mro__ if c.__module__.startswith(NAME)]
            slots = {name for c in cls.__mro__ for name in c.__dict__.get("__slots__", ())}
            in_dict = set().union(*(_assigned(c, trees) for c in ours)) - slots
            if len(in_dict) > SHARED_KEYS_MAX:
                over[cls.__qualname__] = len(in_dict)
    assert over == {}
    assert len(_assigned(workkit_workflow.local.LocalNamespace, trees)) > 20  # the count counts
