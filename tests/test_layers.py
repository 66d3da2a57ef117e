"""The package's imports point down only, and never in a circle (issue 17).

Every import counts, the ones inside functions too: a lazy import from a lower layer into a higher
one is still a dependency that makes a cycle. Layers, lowest first: the wire (``api/``, the
exceptions), the pure engine, the hooks (I/O, the worker's driver), the triggers, the Airflow
surface (operators, sensors, links, lineage), the decorators, then the integrations on top. The
emulator (``testing/``) shares no code with the client at all.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "airflow_provider_openhands"
ROOT = "airflow_provider_openhands"

#: module name prefix -> layer (the longest matching prefix wins).
LAYERS = {
    "exceptions": 0,
    "api": 0,
    "engine": 1,
    "connection_form": 2,
    "results": 2,
    "outcome": 2,
    "hooks": 2,
    "triggers": 3,
    "links": 4,
    "lineage": 4,
    "_openlineage": 4,
    "report": 4,
    "operators": 4,
    "sensors": 4,
    "notifiers": 4,
    "decorators": 5,
    "integrations": 6,
    "get_provider_info": 7,
    "__init__": 7,
    "example_dags": 8,  # DAGs that use the package as a user's do: nothing imports them
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def layer(module: str) -> int | None:
    if module.startswith("testing"):
        return None
    head = module.split(".")[0]
    return LAYERS[head]


def imports_of(path: Path) -> set[str]:
    """Modules of the package that ``path`` imports anywhere (module level or inside functions)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(ROOT):
            base = node.module[len(ROOT) + 1 :]
            for alias in node.names:
                candidate = f"{base}.{alias.name}" if base else alias.name
                found.add(candidate if (PACKAGE / (candidate.replace(".", "/") + ".py")).exists() else base)
        elif isinstance(node, ast.Import):
            found |= {alias.name[len(ROOT) + 1 :] for alias in node.names if alias.name.startswith(ROOT + ".")}
    return {name for name in found if name}


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for target in imports_of(path):
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                targets.add(target)
        edges[name] = targets
    return edges


def test_no_import_points_up_a_layer():
    wrong = []
    for module, targets in graph().items():
        for target in targets:
            mine, theirs = layer(module), layer(target)
            if mine is None or theirs is None:
                if (mine is None) != (theirs is None):
                    wrong.append(f"{module} -> {target} (the emulator shares no code with the client)")
                continue
            if theirs > mine:
                wrong.append(f"{module} (layer {mine}) -> {target} (layer {theirs})")
    assert not wrong, "imports that point up:\n" + "\n".join(sorted(wrong))


def test_no_import_cycle():
    edges = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target, [*stack, target])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_engine_is_pure():
    """No I/O and no Airflow in the engine: it imports only the standard library and the wire's pure parts."""
    allowed = {"__future__", "dataclasses", "random", "uuid", "collections", "typing", "logging"}
    for path in (PACKAGE / "engine").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                top = name.split(".")[0]
                if top == ROOT:
                    assert name.startswith((f"{ROOT}.engine", f"{ROOT}.api.state")), f"{path.name} imports {name}"
                else:
                    assert top in allowed, f"{path.name} imports {name}"


@pytest.mark.parametrize("module", ["api.state", "hooks.openhands", "operators.openhands"])
def test_the_layer_map_knows_every_module(module):
    assert {layer(m) for m in graph()} >= {layer(module)}
    assert all(m.startswith("testing") or m.split(".")[0] in LAYERS for m in graph())
