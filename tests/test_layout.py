"""The package's floors: each subpackage imports only from the floors below it, and nothing
imports in a cycle. A newcomer can then read engine/ bottom up (README, "Layout")."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parents[1] / "engine"

# Floor of each top-level part of the package; a module may import its own part or a lower floor.
# model and data share a floor and may not import each other: both stand on face and render.
FLOORS = {
    "kernels": 0, "_C": 0, "constants": 0, "runtime": 0,
    "render": 1,
    "face": 2,
    "model": 3, "data": 3,
    "training": 4,
    "tasks": 5,
    "cli": 6, "__main__": 6, "__init__": 6,
}
ENTRY_FLOOR = 6


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ENGINE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(["nl3dmm", *parts])


def imports_of(path: Path) -> set[str]:
    """Absolute nl3dmm modules (or packages) that `path` imports, wherever the import stands."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "nl3dmm" or target.startswith("nl3dmm."):
                if node.module is None or target == "nl3dmm":  # `from . import x`: x may be a module
                    found.update(f"{target}.{alias.name}" for alias in node.names)
                else:
                    found.add(target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("nl3dmm."))
    return found


def part_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


MODULES = {module_name(p): p for p in sorted(ENGINE.rglob("*.py"))}


def test_every_part_has_a_floor():
    unknown = {part_of(m) for m in MODULES} - set(FLOORS)
    assert not unknown, f"engine/ parts without a floor in this test: {sorted(unknown)}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_goes_up_a_floor(module):
    mine = part_of(module)
    bad = []
    for target in imports_of(MODULES[module]):
        theirs = part_of(target)
        if theirs == mine or theirs not in FLOORS:
            continue
        # The entry points (cli, __main__, __init__) share the top floor and may call each other.
        if FLOORS[theirs] > FLOORS[mine] or (FLOORS[theirs] == FLOORS[mine] and FLOORS[mine] < ENTRY_FLOOR):
            bad.append(target)
    assert not bad, f"{module} (floor {FLOORS[mine]}) imports from its own floor or above: {sorted(bad)}"


def test_no_import_cycles():
    graph = {}
    for module, path in MODULES.items():
        targets = set()
        for target in imports_of(path):
            # `from .x import y` may name a module x.y or an object y of x: keep what exists.
            targets.add(target if target in MODULES else target.rsplit(".", 1)[0])
        graph[module] = {t for t in targets if t in MODULES and t != module}
    # Package __init__ files re-export their children: a child importing its package's
    # __init__ is how Python loads it, not a cycle in the design.
    for module in graph:
        graph[module] = {t for t in graph[module] if not module.startswith(t + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
