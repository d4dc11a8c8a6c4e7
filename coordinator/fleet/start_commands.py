"""The coordinator's side of building agent stream messages from its records.

The messages themselves are ``common.stream_commands`` / ``common.stream_messages``,
shared with the agent; this module only knows how the coordinator's records fill them.
"""

from __future__ import annotations

from common.stream_commands import StartInstance
from coordinator.state.records import InstanceRecord, VersionRecord

__all__ = ["start_command"]


def start_command(instance: InstanceRecord, version: VersionRecord,
                  state_from_instance_id: str = "") -> StartInstance:
    """Start ``instance`` of ``version`` on its host (snapshot mode: from the state of
    ``state_from_instance_id``)."""
    spec = version.tag.spec
    return StartInstance(
        instance_id=instance.instance_id, apartment=spec.apartment, unit=spec.unit,
        version=instance.version, slot=instance.slot, image=spec.run_image, port=instance.port,
        command=tuple(spec.command), env=dict(spec.env), secret_env=dict(spec.secret_env),
        health=spec.health_check,
        healthy_threshold=max(1, spec.healthy_threshold), warmup_s=spec.warmup_s,
        resources=spec.resources, service_port=spec.service_port,
        state_mode=str(spec.state_mode), idle_timeout_s=spec.idle_timeout_s,
        state_from_instance_id=state_from_instance_id, run_as_root=spec.run_as_root,
        network_mode=spec.network_mode.value,
    )
