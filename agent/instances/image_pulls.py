"""Making sure a version's image is on this host before a container of it is created.

A reference the engine already holds is used as it is. One that names a registry
(``127.0.0.1:5000/demo-app@sha256:...``) and is missing is pulled, by digest when it has one,
with that registry's credentials from ``registry_auth_file`` and within
``image_pull_timeout``. One pull per reference at a time: instances of the same version that
start together wait on the same pull. A bare local name (``landlord/demo-app:1.0.0``) is
never pulled: hosts must hold it, and a missing one is a clear error.

A pull is told as events (``image.pull_started``, a few ``image.pull_progress`` with bytes
done of total, ``image.pulled`` with size and seconds, or ``image.pull_failed`` with the
registry's error), published for the instance whose start asked for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from agent.instances.events import AgentEvent, EventBus, EventType
from agent.instances.spec import InstanceSpec
from agent.runtime.protocol import ImageInfo, PullStatus
from common.clock import Clock
from common.errors import LandlordError, NotFound
from common.image_refs import load_registry_credentials, parse_image_ref

__all__ = ["ImagePuller", "ImageRuntime", "PullProgress"]

PROGRESS_INTERVAL = 5.0
"""Seconds between two progress events of one pull (so a pull tells a few, not hundreds)."""
_DONE = frozenset({"Download complete", "Pull complete", "Verifying Checksum", "Extracting"})
_SKIPPED = frozenset({"Already exists"})


class ImageRuntime(Protocol):
    """The two engine operations a pull needs (``agent.runtime.protocol.ContainerRuntime``)."""

    async def inspect_image(self, reference: str) -> ImageInfo: ...

    async def pull(self, reference: str, auth: Mapping[str, str] | None,
                   on_status: Callable[[PullStatus], None], timeout: float) -> None: ...


@dataclass
class PullProgress:
    """Bytes of one pull summed over the layers it downloads, and when to tell them: at most
    every ``interval`` seconds while bytes grow, and once when every layer is down."""

    interval: float = PROGRESS_INTERVAL
    layers: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Layer -> (bytes done, bytes total; 0 while unknown). Layers already held are left out."""
    told_at: float | None = None
    told_done: int = -1
    finished: bool = False

    @property
    def done(self) -> int:
        return sum(d for d, _ in self.layers.values())

    @property
    def total(self) -> int:
        return sum(t for _, t in self.layers.values())

    def observe(self, status: PullStatus, now: float) -> tuple[int, int] | None:
        """Take one progress line; (bytes done, bytes total) when it is time to tell them."""
        layer, what = status.layer, status.status
        if not layer or what.startswith(("Pulling from", "Digest", "Status")):
            return None
        if what in _SKIPPED:
            self.layers.pop(layer, None)
        elif what == "Downloading" and status.total > 0:
            self.layers[layer] = (min(status.current, status.total), status.total)
        elif what in _DONE and layer in self.layers:
            total = self.layers[layer][1]
            self.layers[layer] = (total, total)
        elif layer not in self.layers:
            self.layers[layer] = (0, 0)  # pulling fs layer, waiting: size not known yet
        done, total = self.done, self.total
        complete = bool(self.layers) and all(t > 0 and d >= t for d, t in self.layers.values())
        if complete and not self.finished:
            self.finished = True
        elif complete or done <= self.told_done or total == 0 or (
                self.told_at is not None and now - self.told_at < self.interval):
            return None
        self.told_at, self.told_done = now, done
        return done, total


class ImagePuller:
    def __init__(self, runtime: ImageRuntime, bus: EventBus, clock: Clock, auth_file: str,
                 timeout: float) -> None:
        self.runtime = runtime
        self.bus = bus
        self.clock = clock
        self.auth_file = auth_file
        self.timeout = timeout
        self._pulls: dict[str, asyncio.Task[None]] = {}

    async def ensure(self, spec: InstanceSpec) -> ImageInfo:
        """``spec.image`` once it is on this host; raise (with the registry's error text
        for a failed pull) when it cannot be."""
        reference = spec.image
        try:
            return await self.runtime.inspect_image(reference)
        except NotFound:
            pass
        parsed = parse_image_ref(reference)
        if not parsed.in_registry:
            raise NotFound(f"image {reference} is not on this host, and a name without a "
                           "registry is never pulled (push it to a registry and publish "
                           "REGISTRY/NAME)", image=reference)
        task = self._pulls.get(reference)
        if task is None:
            task = asyncio.create_task(self._pull(reference, parsed.registry, spec),
                                       name=f"pull {reference}")
            self._pulls[reference] = task
            task.add_done_callback(lambda done: self._forget(reference, done))
        await asyncio.shield(task)
        return await self.runtime.inspect_image(reference)

    def cancel(self) -> list[asyncio.Task[None]]:
        """Cancel the pulls under way (the agent stops); returns their tasks to await."""
        tasks = list(self._pulls.values())
        for task in tasks:
            task.cancel()
        return tasks

    def _forget(self, reference: str, task: asyncio.Task[None]) -> None:
        if self._pulls.get(reference) is task:
            del self._pulls[reference]
        if not task.cancelled():
            task.exception()  # retrieved here: every waiter got it through the shield

    def _auth(self, registry: str) -> dict[str, str] | None:
        found = load_registry_credentials(self.auth_file).get(registry)
        if found is None:
            return None
        return {"username": found.username, "password": found.password,
                "serveraddress": registry}

    async def _pull(self, reference: str, registry: str, spec: InstanceSpec) -> None:
        started = self.clock.monotonic()
        progress = PullProgress()

        def on_status(status: PullStatus) -> None:
            told = progress.observe(status, self.clock.monotonic())
            if told is not None:
                self._publish(spec, EventType.IMAGE_PULL_PROGRESS, image=reference,
                              bytes_done=told[0], bytes_total=told[1])

        self._publish(spec, EventType.IMAGE_PULL_STARTED, image=reference, registry=registry)
        try:
            await self.runtime.pull(reference, self._auth(registry), on_status, self.timeout)
            info = await self.runtime.inspect_image(reference)
        except LandlordError as exc:
            self._publish(spec, EventType.IMAGE_PULL_FAILED, image=reference,
                          registry=registry, reason=str(exc),
                          seconds=round(self.clock.monotonic() - started, 3))
            raise
        self._publish(spec, EventType.IMAGE_PULLED, image=reference, registry=registry,
                      size=info.size, downloaded=progress.done,
                      seconds=round(self.clock.monotonic() - started, 3))

    def _publish(self, spec: InstanceSpec, event_type: str, **details: object) -> None:
        self.bus.publish(AgentEvent(event_type, spec.instance_id, spec.unit, spec.version,
                                    self.clock.now(), details))
