"""The committed sample configs (systemd/*.toml, copied to /etc/landlord/ by the installer)
and docs/configuration.md are what the generators print, and the samples load as they are."""

from __future__ import annotations

from pathlib import Path

import pytest
from gen_config_docs import ROOT, main, outputs

from agent.config import SETTINGS as AGENT
from agent.config import AgentConfig
from agent.main import main as agent_main
from coordinator.config import SETTINGS as COORDINATOR
from coordinator.config import CoordinatorConfig
from coordinator.main import main as coordinator_main


def test_committed_files_are_what_the_generator_writes() -> None:
    for path, text in outputs().items():
        assert path.read_text() == text, f"{path} is stale: run scripts/gen_config_docs.py"
    assert main(["--check"]) == 0


def test_daemons_print_the_committed_samples(capsys: pytest.CaptureFixture[str]) -> None:
    assert agent_main(["--print-sample-config"]) == 0
    assert capsys.readouterr().out == (ROOT / "systemd" / "agent.toml").read_text()
    assert coordinator_main(["--print-sample-config"]) == 0
    assert capsys.readouterr().out == (ROOT / "systemd" / "coordinator.toml").read_text()


def test_samples_load_as_they_are_and_hold_every_setting() -> None:
    for spec, cls, name in ((AGENT, AgentConfig, "agent"),
                            (COORDINATOR, CoordinatorConfig, "coordinator")):
        path = ROOT / "systemd" / f"{name}.toml"
        # TLS files name this fleet's certificates: without them, only plain text loads
        plain = {f"{spec.env_prefix}INSECURE": "true"}
        assert spec.load(path, plain, {}) == cls(insecure=True)
        text = path.read_text()
        for setting in spec.names:
            assert f"\n#{setting} = " in text
            assert f"`{spec.env_prefix}{setting.upper()}`" in outputs()[ROOT / "docs" /
                                                                    "configuration.md"]


def test_uncommented_sample_lines_load_back_to_the_defaults(tmp_path: Path) -> None:
    for spec, cls, name in ((AGENT, AgentConfig, "agent"),
                            (COORDINATOR, CoordinatorConfig, "coordinator")):
        text = (ROOT / "systemd" / f"{name}.toml").read_text()
        live = "\n".join(line[1:] if line.startswith("#") and " = " in line else line
                         for line in text.splitlines())
        path = tmp_path / f"{name}.toml"
        path.write_text(live)
        assert spec.load(path, {f"{spec.env_prefix}INSECURE": "true"}, {}) == cls(insecure=True)
