"""What the supervisor hands its instances' failures and health to."""

from __future__ import annotations

from typing import Protocol

from agent.instances.store import InstanceRecord

__all__ = ["FailureHandler"]


class FailureHandler(Protocol):
    """Who acts on the instances' failures and health (``agent.instances.recovery.Recovery``): a
    container that died unasked, one that runs broken (unhealthy, never ready), a healthy
    probe, a (re)gained health; ``cancel`` when an instance is stopped on purpose."""

    async def on_container_exit(self, record: InstanceRecord, container_id: str,
                                exit_code: int | None) -> None: ...
    async def on_failure(self, record: InstanceRecord, container_id: str | None,
                         reason: str) -> None: ...
    def note_healthy(self, record: InstanceRecord) -> None: ...
    def on_healthy(self, record: InstanceRecord) -> None: ...
    def cancel(self, instance_id: str) -> None: ...
    def cancel_all(self) -> None: ...
