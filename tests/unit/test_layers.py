"""The layout shows the architecture: each layer imports only the layers below it, no module
imports itself back through others, and no module grows past the size the house style allows.

The layers are listed top down, as docs/architecture.md draws them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 400

LAYERS = {
    "coordinator": [
        {"coordinator.main"},
        {"coordinator.app"},
        {"coordinator.api", "coordinator.leadership", "coordinator.cli", "coordinator.metrics",
         "coordinator.web"},
        {"coordinator.rollouts"},
        {"coordinator.registry"},
        {"coordinator.images_client", "coordinator.images"},
        {"coordinator.fleet"},
        {"coordinator.state"},
        {"coordinator.config", "coordinator.errors", "coordinator.gc_pacing",
         "coordinator.pki_files"},
    ],
    "agent": [
        {"agent.main"},
        {"agent.daemon"},
        {"agent.metrics", "agent.agent_health"},
        {"agent.stream"},
        {"agent.service"},
        {"agent.gc"},
        {"agent.instances"},
        {"agent.limits", "agent.dataplane", "agent.runtime"},
        {"agent.config"},
    ],
}


def _modules(package: str) -> Iterator[tuple[str, Path]]:
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path


def _imports(name: str, path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def _layer(package: str, module: str) -> int | None:
    for index, layer in enumerate(LAYERS[package]):
        if any(module == top or module.startswith(top + ".") for top in layer):
            return index
    return None


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_every_module_belongs_to_a_layer(package: str) -> None:
    unplaced = [name for name, _ in _modules(package)
                if name != package and _layer(package, name) is None]
    assert unplaced == [], f"add these to LAYERS and docs/architecture.md: {unplaced}"


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_layers_import_only_downward(package: str) -> None:
    upward = []
    for name, path in _modules(package):
        mine = _layer(package, name)
        for target in _imports(name, path):
            theirs = _layer(package, target) if target.startswith(package + ".") else None
            if mine is not None and theirs is not None and theirs < mine:
                upward.append(f"{name} -> {target}")
    assert upward == []


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {}
    for package in ("agent", "coordinator", "common"):
        for name, path in _modules(package):
            if ".gen" not in name:
                graph[name] = _imports(name, path)
    for name in graph:
        graph[name] = {t for t in graph[name] if t in graph and t != name}

    def cycle_from(start: str) -> list[str] | None:
        stack, seen = [(start, [start])], set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return [*trail, start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*trail, nxt]))
        return None

    cycles = [c for c in map(cycle_from, sorted(graph)) if c]
    assert cycles == []


def test_modules_stay_small() -> None:
    big = [f"{path.relative_to(ROOT)} ({n})"
           for package in ("agent", "coordinator", "common")
           for _, path in _modules(package)
           if "gen" not in path.parts and (n := len(path.read_text().splitlines())) > MAX_LINES]
    assert big == []
