"""A SIMULATED agent: the real stream client (agent/stream/session.py) over a fake runtime.

No containers and no HAProxy: "starting" an instance adds it to an in-memory table (it goes
initializing -> running after a short delay), "stopping" removes it, routes are recorded.
The table is written to ``--state-file`` after every change so tests can see exactly what
the host holds, and read back at start so a restarted simulated host keeps its "containers"
(as real containers outlive their agent).

Run: python tests/e2e/simulated_agent.py --host-id h1 --address 127.0.0.2 \
        --coordinators 127.0.0.1:7400 --state-file /tmp/h1.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, replace
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.runtime.protocol import OutputPiece
from agent.stream.endpoint import ChangeBatch
from agent.stream.session import CoordinatorStream, StreamSettings
from common.errors import FailedPrecondition, NotFound
from common.resources import Resources
from common.stream_commands import (
    AgentCommand,
    CollectGarbage,
    DrainInstance,
    ExecStream,
    ReadLogs,
    RunCheck,
    SetRoute,
    SetWeights,
    StartInstance,
    StopInstance,
)
from common.stream_messages import ObservedInstance, Registration
from common.transport import TlsSettings

__all__ = ["FakeRuntime", "main"]

log = logging.getLogger("simulated-agent")


class FakeRuntime:
    """AgentEndpoint over an in-memory instance table (for tests and the simulated agent)."""

    def __init__(
        self,
        identity: Registration,
        images: Sequence[str] = (),
        state_file: Path | None = None,
        start_delay: float = 0.05,
    ) -> None:
        self._identity = identity
        self._images = tuple(images)
        self.state_file = state_file
        self.start_delay = start_delay
        self.instances: dict[str, ObservedInstance] = {}
        self.routes: dict[str, list[dict[str, object]]] = {}
        self.executed: list[AgentCommand] = []
        self._changed: dict[str, ObservedInstance] = {}
        self._removed: set[str] = set()
        self._signal = asyncio.Event()
        self.connected = False
        self.coordinator = ""
        if state_file is not None and state_file.exists():
            saved = json.loads(state_file.read_text())
            for iid, data in saved.get("instances", {}).items():
                data["usage"] = {}
                data["unenforced_limits"] = tuple(data.get("unenforced_limits", ()))
                self.instances[iid] = ObservedInstance(**data)
            self.routes = saved.get("routes", {})

    def registration(self) -> Registration:
        return replace(self._identity, instances=tuple(self.instances.values()),
                       images=self._images)

    async def next_changes(self, timeout: float) -> ChangeBatch:
        if not self._changed and not self._removed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._signal.wait(), timeout)
        self._signal.clear()
        batch = ChangeBatch(changed=list(self._changed.values()), removed=sorted(self._removed))
        self._changed, self._removed = {}, set()
        return batch

    def _set(self, report: ObservedInstance) -> None:
        self.instances[report.instance_id] = report
        self._changed[report.instance_id] = report
        self._removed.discard(report.instance_id)
        self._signal.set()

    async def output(self, command: ReadLogs | ExecStream) -> AsyncIterator[OutputPiece]:
        """A simulated instance's logs: one line per second it has run (following: one more
        each second); an exec echoes its command and exits 0, or N for ``exit N``."""
        found = self.instances.get(command.instance_id)
        if found is None:
            raise NotFound(f"instance {command.instance_id} does not run on this host")
        if isinstance(command, ExecStream):
            yield OutputPiece((" ".join(command.argv) + "\n").encode())
            code = int(command.argv[1]) if command.argv[:1] == ("exit",) else 0
            yield OutputPiece(end=True, exit_code=code)
            return
        line = 0
        while True:
            line += 1
            yield OutputPiece(f"{found.instance_id} {found.version} line {line}\n".encode())
            if not command.follow and line >= 3:
                break
            if command.follow:
                await asyncio.sleep(0.2)
        yield OutputPiece(end=True)

    async def execute(self, command: AgentCommand) -> None:
        self.executed.append(command)
        if isinstance(command, StartInstance):
            if command.instance_id not in self.instances:
                self._set(
                    ObservedInstance(
                        instance_id=command.instance_id,
                        host_id=self._identity.host_id,
                        apartment=command.apartment,
                        unit=command.unit,
                        version=command.version,
                        slot=command.slot,
                        state="initializing",
                        address=self._identity.address,
                        port=command.port,
                        started_at=time.time(),
                    )
                )
                asyncio.get_running_loop().call_later(
                    self.start_delay, self._run, command.instance_id
                )
        elif isinstance(command, StopInstance):
            if self.instances.pop(command.instance_id, None) is not None:
                self._changed.pop(command.instance_id, None)
                self._removed.add(command.instance_id)
                self._signal.set()
        elif isinstance(command, SetRoute):
            self.routes[f"{command.apartment}/{command.unit}"] = [
                asdict(s) for s in command.servers
            ]
        elif isinstance(command, SetWeights):
            for server in self.routes.get(f"{command.apartment}/{command.unit}", []):
                if server["server"] in command.weights:
                    server["weight"] = command.weights[str(server["server"])]
        elif isinstance(command, DrainInstance | CollectGarbage):
            pass  # nothing to drain or collect in memory; acknowledged all the same
        elif isinstance(command, RunCheck):
            # never a made-up success: the check fails, saying why
            raise FailedPrecondition("a simulated agent has no container to run a command in")
        self.save()

    def _run(self, instance_id: str) -> None:
        found = self.instances.get(instance_id)
        if found is not None and found.state == "initializing":
            self._set(replace(found, state="running", health_score=1.0))
            self.save()

    def save(self) -> None:
        if self.state_file is None:
            return
        data = {
            "host_id": self._identity.host_id,
            "instances": {iid: {**asdict(r), "usage": {}} for iid, r in self.instances.items()},
            "routes": self.routes,
            "connected": self.connected,
            "coordinator": self.coordinator,
            "commands": len(self.executed),
            "starts": sum(isinstance(c, StartInstance) for c in self.executed),
            "stops": sum(isinstance(c, StopInstance) for c in self.executed),
            "pid": os.getpid(),
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, sort_keys=True))
        tmp.replace(self.state_file)


async def _run(args: argparse.Namespace) -> None:
    identity = Registration(
        host_id=args.host_id,
        building=args.building,
        address=args.address,
        capacity=Resources(
            cpu=args.cpu_millis / 1000,
            memory=args.memory_bytes,
            storage=50 << 30,
            network=1_000_000_000,
        ),
        labels={"simulated": "true"},
        enforceable=("cpu", "memory"),
        agent_version="simulated-0",
    )
    runtime = FakeRuntime(identity, [i for i in args.images.split(",") if i], Path(args.state_file))
    stream = CoordinatorStream(
        runtime,
        StreamSettings(
            coordinators=tuple(args.coordinators.split(",")), backoff_initial=0.1, backoff_max=1.0,
            tls=TlsSettings(args.tls_ca, args.tls_cert, args.tls_key),
        ),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runtime.save()
    task = asyncio.create_task(stream.run())

    async def track() -> None:
        while True:
            connected = stream.connected.is_set()
            if connected != runtime.connected or stream.coordinator_id != runtime.coordinator:
                runtime.connected, runtime.coordinator = connected, stream.coordinator_id
                runtime.save()
            await asyncio.sleep(0.05)

    tracker = asyncio.create_task(track())
    await stop.wait()
    for t in (task, tracker):
        t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await t


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host-id", required=True)
    parser.add_argument("--address", required=True)
    parser.add_argument("--building", default="default")
    parser.add_argument("--coordinators", required=True)
    parser.add_argument("--state-file", required=True)
    parser.add_argument("--cpu-millis", type=int, default=4000)
    parser.add_argument("--memory-bytes", type=int, default=8 << 30)
    parser.add_argument("--images", default="demo:1")
    parser.add_argument("--tls-ca", default="", help="CA bundle (empty: plain text)")
    parser.add_argument("--tls-cert", default="", help="this host's certificate")
    parser.add_argument("--tls-key", default="", help="its key")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s {args.host_id} %(levelname)s %(message)s"
    )
    asyncio.run(_run(args))


if __name__ == "__main__":
    main()
