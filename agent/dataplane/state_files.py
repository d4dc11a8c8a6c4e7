"""The files one data plane keeps under DATA_DIR/haproxy, each written atomically.

``dataplane.json`` is the intent (written before HAProxy is touched); the config and
map files are rendered from it, ``servers.state`` is HAProxy's own dump for its next
start, and ``running.skeleton`` names the config structure the running HAProxy loaded.
A file is rewritten only when its text changed since this process last wrote it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from agent.dataplane.haproxy_config import RenderedConfig
from agent.dataplane.model import DataPlaneSpec
from agent.dataplane.settings import HaproxyPaths
from common.errors import FailedPrecondition

__all__ = ["StateFiles", "write_atomic"]


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file beside ``path`` and rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class StateFiles:
    def __init__(self, paths: HaproxyPaths) -> None:
        self.paths = paths
        self._written: dict[Path, str] = {}

    def write(self, path: Path, text: str) -> None:
        if self._written.get(path) != text:
            write_atomic(path, text)
            self._written[path] = text

    def load_spec(self, advertise: str) -> DataPlaneSpec:
        """The saved intent (with this agent's advertise address), or an empty one."""
        try:
            data = json.loads(self.paths.spec_file.read_text())
        except FileNotFoundError:
            return DataPlaneSpec(advertise)
        except ValueError as exc:
            raise FailedPrecondition(f"unreadable {self.paths.spec_file}: {exc}") from exc
        return dataclasses.replace(DataPlaneSpec.from_dict(data), advertise=advertise)

    def save_spec(self, spec: DataPlaneSpec) -> None:
        self.write(self.paths.spec_file, json.dumps(spec.to_dict(), indent=1) + "\n")

    def save_rendered(self, rendered: RenderedConfig, config: Path | None = None) -> None:
        """Maps first, then the config that names them."""
        for path, text in rendered.maps.items():
            self.write(path, text)
        self.write(config or self.paths.config, rendered.text)

    def forget(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self._written.pop(path, None)

    def save_server_state(self, text: str) -> None:
        """Keep a ``show servers state`` dump for HAProxy's next start."""
        if text.startswith("1\n"):
            self.write(self.paths.state_file, text + "\n")

    def running_skeleton(self) -> str:
        try:
            return self.paths.running_file.read_text().strip()
        except FileNotFoundError:
            return ""

    def save_running_skeleton(self, skeleton: str) -> None:
        self.write(self.paths.running_file, skeleton + "\n")
