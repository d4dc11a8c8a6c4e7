"""What the agent is asked to run (InstanceSpec) and what it shows back (InstanceView)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from common.errors import InvalidArgument
from common.input_bounds import check_argv
from common.network_modes import NetworkMode, parse_network_mode
from common.unit_spec import HealthCheck, StateMode, check_secret_env, redacted_secrets

__all__ = [
    "HealthSpec",
    "InstanceSpec",
    "InstanceView",
    "ResourceSpec",
    "Slot",
    "StateMode",
]

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}\Z")
_INSTANCE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,100}\Z")


class Slot(StrEnum):
    """Blue-green slot of an instance."""

    BLUE = "blue"
    GREEN = "green"


@dataclass(frozen=True)
class HealthSpec(HealthCheck):
    """The instance's ``HealthCheck`` (one type, one set of defaults: ``common.unit_spec``)
    with how this deployment counts it: successes to be healthy, warm-up, startup time.

    Starting instances are probed every ``startup_probe_interval`` of the agent until
    ready, then every ``interval_s``."""

    success_threshold: int = 1
    """Consecutive successes that make an instance healthy (and ready)."""
    warmup: float = 0.0
    """Seconds after the container starts before it may count as ready."""
    startup_timeout: float = 60.0
    """Seconds an instance has to become ready before it is treated as crashed."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.startup_timeout <= 0:
            raise InvalidArgument("health startup_timeout must be > 0", field="startup_timeout")
        if self.warmup < 0:
            raise InvalidArgument("health warmup must be >= 0", field="warmup")
        if self.success_threshold < 1:
            raise InvalidArgument("health success_threshold must be >= 1")

    @classmethod
    def of(cls, check: HealthCheck, success_threshold: int = 1, warmup: float = 0.0,
           **extra: Any) -> HealthSpec:
        return cls(**{f.name: getattr(check, f.name) for f in fields(HealthCheck)},
                   success_threshold=success_threshold, warmup=warmup, **extra)

    # the names the supervisor and the health tracker read
    @property
    def interval(self) -> float:
        return self.interval_s

    @property
    def timeout(self) -> float:
        return self.timeout_s

    @property
    def failure_threshold(self) -> int:
        return self.retries

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "success_threshold": self.success_threshold,
                "warmup": self.warmup, "startup_timeout": self.startup_timeout}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HealthSpec:
        values = dict(data)
        for old, new in _OLD_HEALTH_KEYS.items():  # records written before HealthCheck
            if old in values:
                values[new] = values.pop(old)
        values["command"] = tuple(values.get("command", ()))
        return cls(**values)


_OLD_HEALTH_KEYS = {"interval": "interval_s", "timeout": "timeout_s",
                    "failure_threshold": "retries"}


@dataclass(frozen=True)
class ResourceSpec:
    """Limits of one instance; 0 means "no limit" for storage and network."""

    cpu: float = 0.5
    """Cores (fractional allowed), enforced as a CFS quota."""
    memory: int = 256 * 1024 * 1024
    """Bytes of memory; swap is off (memory+swap equals memory)."""
    storage: int = 1024 * 1024 * 1024
    """Bytes of writable layer plus state directory before eviction; 0 = unlimited."""
    network: int = 0
    """Egress bits per second; 0 = unlimited."""
    pids: int = 512
    """Most processes and threads the container may hold."""

    def __post_init__(self) -> None:
        if self.cpu <= 0:
            raise InvalidArgument("cpu must be > 0 cores", resource="cpu")
        if self.memory < 6 * 1024 * 1024:
            raise InvalidArgument("memory must be at least 6 MiB (Docker's minimum)",
                                  resource="memory")
        if self.storage < 0 or self.network < 0:
            raise InvalidArgument("storage and network must be >= 0")
        if self.pids < 1:
            raise InvalidArgument("pids must be >= 1", resource="pids")

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResourceSpec:
        return cls(**dict(data))


@dataclass(frozen=True)
class InstanceSpec:
    """One instance to run: a unit version in a slot, with its limits and checks."""

    apartment: str
    unit: str
    version: str
    slot: Slot
    instance_id: str
    image: str
    port: int
    """Port the instance is reached at on the host's advertise address (env PORT): where it
    listens (host network) or where its own port PORT is published (bridged)."""
    command: tuple[str, ...] = ()
    """Command overriding the image's CMD; empty keeps the image's."""
    env: Mapping[str, str] = field(default_factory=dict)
    secret_env: Mapping[str, str] = field(default_factory=dict, repr=False)
    """Env the container gets; kept in the root-only record, shown nowhere else."""
    health: HealthSpec = field(default_factory=HealthSpec)
    resources: ResourceSpec = field(default_factory=ResourceSpec)
    state_mode: StateMode = StateMode.NONE
    state_dir: str = "/state"
    """Path of the state directory inside the container (env STATE_DIR)."""
    idle_timeout: float = 0.0
    """Seconds without activity before GC may collect the instance; 0 = never."""
    read_only_rootfs: bool = True
    """Mount the image read-only (a small /tmp tmpfs is still writable)."""
    network_mode: NetworkMode = NetworkMode.UNSET
    """bridge or host; unset runs as ``common.network_modes.DEFAULT_NETWORK_MODE``."""
    run_as_root: bool = False
    """Run as root; else as the image's user, or uid 65532 (agent/instances/run_as.py)."""

    def __post_init__(self) -> None:
        for name in ("apartment", "unit"):
            if not _NAME.fullmatch(getattr(self, name)):
                raise InvalidArgument(
                    f"{name} {getattr(self, name)!r} must be lowercase letters, digits,"
                    " '.', '_' or '-' (at most 63)", field=name)
        if not _INSTANCE.fullmatch(self.instance_id):
            raise InvalidArgument(f"instance_id {self.instance_id!r} is not a valid name",
                                  field="instance_id")
        if not self.version or not self.image:
            raise InvalidArgument("version and image are required")
        if not 1 <= self.port <= 65535:
            raise InvalidArgument(f"port {self.port} is not in 1..65535", field="port")
        if not self.state_dir.startswith("/"):
            raise InvalidArgument("state_dir must be an absolute path in the container")
        if self.idle_timeout < 0:
            raise InvalidArgument("idle_timeout must be >= 0", field="idle_timeout")
        object.__setattr__(self, "slot", Slot(self.slot))
        object.__setattr__(self, "state_mode", StateMode(self.state_mode))
        object.__setattr__(self, "command", tuple(self.command))
        object.__setattr__(self, "network_mode", parse_network_mode(self.network_mode))
        check_argv("command", self.command)
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))
        object.__setattr__(self, "secret_env", MappingProxyType(dict(self.secret_env)))
        check_secret_env(self.env, self.secret_env)

    def to_dict(self) -> dict[str, Any]:
        return {
            "apartment": self.apartment,
            "unit": self.unit,
            "version": self.version,
            "slot": self.slot.value,
            "instance_id": self.instance_id,
            "image": self.image,
            "port": self.port,
            "command": list(self.command),
            "env": dict(self.env),
            "health": self.health.to_dict(),
            "resources": self.resources.to_dict(),
            "state_mode": self.state_mode.value,
            "state_dir": self.state_dir,
            "idle_timeout": self.idle_timeout,
            "read_only_rootfs": self.read_only_rootfs,
            # only when set: records and labels without them read as before
            **({"run_as_root": True} if self.run_as_root else {}),
            **({"secret_env": dict(self.secret_env)} if self.secret_env else {}),
            **({"network_mode": self.network_mode.value} if self.network_mode else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InstanceSpec:
        values = dict(data)
        values["command"] = tuple(values.get("command", ()))
        values["health"] = HealthSpec.from_dict(values.get("health", {}))
        values["resources"] = ResourceSpec.from_dict(values.get("resources", {}))
        return cls(**values)

    def public_dict(self) -> dict[str, Any]:
        """``to_dict`` with each secret's value redacted: for labels, events and dumps."""
        data = self.to_dict()
        if self.secret_env:
            data["secret_env"] = redacted_secrets(self.secret_env)
        return data


@dataclass(frozen=True)
class InstanceView:
    """A read-only snapshot of one instance for callers of the agent."""

    instance_id: str
    apartment: str
    unit: str
    version: str
    slot: str
    state: str
    health_score: float
    address: str
    port: int
    container_id: str | None
    generation: int
    restarts: int
    started_at: float
    last_activity: float
    enforcement: Mapping[str, str]
    """Per resource: how its limit is enforced ("cgroup", "eviction", "tc", "none: why")."""
    metadata: Mapping[str, str]

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["enforcement"] = dict(self.enforcement)
        data["metadata"] = dict(self.metadata)
        return data
