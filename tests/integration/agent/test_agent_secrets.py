"""Secret env on real Docker: the container gets it, its label, crash dump and events do
not show it, and the root-only record keeps it for the replacement."""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path

from agent_fixtures import AgentHarness, make_spec, wait_event

from agent.instances.events import EventType
from agent.instances.resource_monitor import main_process_pid
from agent.runtime.protocol import ContainerInfo
from common.unit_spec import REDACTED

SECRET = "hunter2-s3cret-value"


def _env(info: ContainerInfo) -> list[str]:
    return list(info.raw["Config"]["Env"])


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _dump_modes(directory: Path, data_dir: Path) -> tuple[set[int], set[int]]:
    """Modes of the dump's directories up to the data directory, and of its files."""
    dirs = {_mode(p) for p in (directory, *directory.parents[:len(directory.relative_to(
        data_dir).parts) - 1])}
    return dirs, {_mode(f) for f in directory.iterdir()}


async def test_secret_reaches_the_container_and_nothing_else(harness: AgentHarness) -> None:
    old_umask = os.umask(0o022)  # a service's default: files would be world-readable
    try:
        agent = await harness.agent()
        spec = make_spec("secret-1", secret_env={"DB_PASSWORD": SECRET})
        view = await agent.start_instance(spec)
        info = await agent.runtime.inspect(view.container_id or "")
        assert f"DB_PASSWORD={SECRET}" in _env(info)
        assert all(SECRET not in value for value in info.labels.values())
        label = json.loads(info.labels["landlord.spec"])
        assert label["secret_env"] == {"DB_PASSWORD": REDACTED}

        record = agent.config.data_dir / "instances" / "secret-1.json"
        assert _mode(record) == 0o600 and _mode(record.parent) == 0o700
        assert SECRET in record.read_text()  # root-only: what a restart needs

        os.kill(main_process_pid(info.pid), signal.SIGKILL)  # the app, under docker-init
        dump = await wait_event(agent, EventType.CRASH_DUMP)
        await wait_event(agent, EventType.RECOVERY_SUCCESS)
        directory = Path(dump.details["path"])
        inspect = (directory / "inspect.json").read_text()
        assert f"DB_PASSWORD={REDACTED}" in inspect and SECRET not in inspect
        assert _dump_modes(directory, agent.config.data_dir) == ({0o700}, {0o600})

        after = await agent.runtime.inspect(agent.instance("secret-1").container_id or "")
        assert after.id != info.id and f"DB_PASSWORD={SECRET}" in _env(after)
        events = json.dumps([e.to_dict() for e in agent.bus.recent()], default=str)
        assert SECRET not in events
    finally:
        os.umask(old_umask)
