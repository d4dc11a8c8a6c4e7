"""The domain core stays pure: no RPC, container, store or OS I/O imports.

common/gen (generated protobuf), common/transport (the one channel/server
factory) and common/systemd_notify.py (the one datagram both daemons send to systemd)
are the edge and are exempt.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

COMMON = Path(__file__).resolve().parents[2] / "common"
EDGE = {"gen", "transport", "systemd_notify.py"}
FORBIDDEN = {"grpc", "docker", "aetcd", "socket", "subprocess", "urllib", "http", "requests"}
DOMAIN_MODULES = sorted(
    p for p in COMMON.rglob("*.py") if p.relative_to(COMMON).parts[0] not in EDGE
)


def test_there_are_domain_modules() -> None:
    assert len(DOMAIN_MODULES) >= 10


@pytest.mark.parametrize("path", DOMAIN_MODULES, ids=lambda p: str(p.relative_to(COMMON)))
def test_domain_module_imports_no_io(path: Path) -> None:
    tree = ast.parse(path.read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id != "open", f"{path.name} opens a file"
    bad = imported & FORBIDDEN
    assert not bad, f"{path.name} imports {sorted(bad)}"
