"""The committed generated code matches proto/ (regenerate with `make proto`)."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _tree(path: Path) -> dict[str, Path]:
    return {
        str(p.relative_to(path)): p
        for p in path.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_committed_generated_code_is_current(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), str(out)],
        check=True,
        capture_output=True,
    )
    fresh, committed = _tree(out), _tree(ROOT / "common" / "gen")
    assert sorted(fresh) == sorted(committed), "generated file set differs: run `make proto`"
    stale = [name for name in fresh if not filecmp.cmp(fresh[name], committed[name], shallow=False)]
    assert not stale, f"out of date with proto/: {stale}; run `make proto`"


def test_generated_modules_import_without_path_tricks() -> None:
    from common.gen.landlord.v1 import admin_pb2, agent_pb2, agent_pb2_grpc, types_pb2

    assert admin_pb2.DESCRIPTOR.package == "landlord.v1"
    assert hasattr(agent_pb2_grpc, "AgentStreamStub")
    msg = agent_pb2.AgentMessage(register=agent_pb2.Register(host_id="h1"))
    again = agent_pb2.AgentMessage.FromString(msg.SerializeToString())
    assert again.register.host_id == "h1"
    assert types_pb2.Resources(cpu_millis=500).cpu_millis == 500
