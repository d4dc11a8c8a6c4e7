"""Pure translation of an InstanceSpec into a container create request, and back."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from agent.instances.spec import InstanceSpec, StateMode
from agent.runtime.protocol import CreateRequest, Mount
from common.network_modes import NetworkMode, effective_mode

__all__ = [
    "LABEL_APARTMENT",
    "LABEL_GENERATION",
    "LABEL_HOST",
    "LABEL_INSTANCE",
    "LABEL_SLOT",
    "LABEL_SPEC",
    "LABEL_UNIT",
    "LABEL_VERSION",
    "build_create_request",
    "container_name",
    "instance_labels",
    "static_enforcement",
]

LABEL_HOST = "landlord.host"
LABEL_APARTMENT = "landlord.apartment"
LABEL_UNIT = "landlord.unit"
LABEL_VERSION = "landlord.version"
LABEL_SLOT = "landlord.slot"
LABEL_INSTANCE = "landlord.instance"
LABEL_GENERATION = "landlord.generation"
LABEL_SPEC = "landlord.spec"
"""The whole spec as compact JSON, so a container can be adopted without its record."""
TMPFS_SIZE = "64m"


def container_name(host_id: str, instance_id: str, generation: int) -> str:
    """Unique per replacement, so an old container can be dumped while its successor runs."""
    return f"landlord-{host_id}-{instance_id}-g{generation}"


def instance_labels(host_id: str, spec: InstanceSpec, generation: int,
                    extra: Mapping[str, str]) -> dict[str, str]:
    labels = dict(extra)
    labels.update({
        LABEL_HOST: host_id,
        LABEL_APARTMENT: spec.apartment,
        LABEL_UNIT: spec.unit,
        LABEL_VERSION: spec.version,
        LABEL_SLOT: spec.slot.value,
        LABEL_INSTANCE: spec.instance_id,
        LABEL_GENERATION: str(generation),
        LABEL_SPEC: json.dumps(spec.public_dict(), separators=(",", ":"), sort_keys=True),
    })
    return labels


def build_create_request(
    spec: InstanceSpec,
    *,
    host_id: str,
    advertise_address: str,
    generation: int,
    state_host_dir: Path | None,
    extra_labels: Mapping[str, str],
    hard_storage_quota: bool,
    bridge_network: str = "",
    user: str = "",
) -> CreateRequest:
    """The container for ``spec``: bridged (its port published on the advertise address)
    or on the host's network bound to that address, secure defaults, cgroup limits with
    swap off, and the state directory bind-mounted."""
    bridged = effective_mode(spec.network_mode) is NetworkMode.BRIDGE
    if bridged and not bridge_network:
        raise ValueError("a bridge network is needed for network_mode bridge")
    env = {**spec.env, **spec.secret_env}
    env.update({
        "PORT": str(spec.port),
        "BIND": "0.0.0.0" if bridged else advertise_address,
        "VERSION": spec.version,
        "INSTANCE_ID": spec.instance_id,
        "HOST_ID": host_id,
    })
    mounts: tuple[Mount, ...] = ()
    if spec.state_mode is not StateMode.NONE:
        if state_host_dir is None:
            raise ValueError("a state directory is needed for state_mode " + spec.state_mode)
        mounts = (Mount(str(state_host_dir), spec.state_dir),)
        env["STATE_DIR"] = spec.state_dir
    storage_opt = {}
    if hard_storage_quota and spec.resources.storage:
        storage_opt = {"size": str(spec.resources.storage)}
    memory = spec.resources.memory
    return CreateRequest(
        name=container_name(host_id, spec.instance_id, generation),
        image=spec.image,
        command=spec.command,
        env=env,
        labels=instance_labels(host_id, spec, generation, extra_labels),
        nano_cpus=round(spec.resources.cpu * 1e9),
        mem_limit=memory,
        memswap_limit=memory,
        pids_limit=spec.resources.pids,
        mounts=mounts,
        tmpfs={"/tmp": f"rw,nosuid,nodev,size={TMPFS_SIZE},mode=1777"}
        if spec.read_only_rootfs else {},
        read_only=spec.read_only_rootfs,
        storage_opt=storage_opt,
        network_mode=bridge_network if bridged else "host",
        published={spec.port: (advertise_address, spec.port)} if bridged else {},
        user=user,  # agent/instances/run_as.py chooses it
    )


def static_enforcement(spec: InstanceSpec, storage_mode: str) -> dict[str, str]:
    """How each limit of ``spec`` is enforced, as far as known before the container runs."""
    res = spec.resources
    storage = "none: no limit" if not res.storage else (
        "hard quota (storage-opt size)" if storage_mode == "quota"
        else "soft: evicted when over (overlay2 on this filesystem has no quota)")
    return {"cpu": f"cgroup cfs quota {res.cpu:g} cores",
            "memory": f"cgroup limit {res.memory} bytes, swap off",
            "pids": f"cgroup pids.max {res.pids}",
            "storage": storage,
            "network": "none: no limit" if not res.network else "pending"}
