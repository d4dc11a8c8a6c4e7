"""What makes a version of a unit: everything that runs, and so everything its checksum covers.

A version is immutable in everything that runs: image (and the digest publishing resolved
it to), command, env, ports, health check (with its warm-up and healthy threshold),
resources, dependencies, state mode, idle timeout, running as root, network mode. Its
``checksum()`` is the sha256 of the canonical JSON (sorted keys, no spaces) of exactly those
fields; name, version and publication time are not part of it. A version published before
a field existed (a digest, ``run_as_root``, ``network_mode``) keeps its checksum.

Secret env (``secret_env``) is kept apart from ``env``: the checksum covers the secrets'
names, never their values, and API answers, container labels, events and dumps show names
only (``redacted_secrets``). A version is immutable, so a new secret value needs a new
version; publishing the same content with only a secret's value changed is the same
checksum, and so answers as the version already published.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from common.dependencies import parse_dependency, qualify
from common.errors import InvalidArgument
from common.image_refs import MAX_REFERENCE, parse_image_ref
from common.input_bounds import (
    MAX_DEPENDENCIES,
    MAX_HEALTH_COUNT,
    MAX_HEALTH_SECONDS,
    MAX_IDLE_TIMEOUT_S,
    MAX_WARMUP_S,
    check_amounts,
    check_argv,
    check_count,
    check_env,
    check_length,
    check_path,
    check_seconds,
    check_service_port,
    check_text,
    quoted,
)
from common.network_modes import NetworkMode, parse_network_mode
from common.resources import Resources
from common.semantic_versions import parse_version

__all__ = [
    "DEFAULT_HEALTH",
    "REDACTED",
    "HealthCheck",
    "StateMode",
    "UnitSpec",
    "canonical_json",
    "check_secret_env",
    "redacted_secrets",
    "sha256_of",
]

REDACTED = "<secret>"
"""What stands for a secret env value wherever a spec leaves its holder."""


def redacted_secrets(secret_env: Mapping[str, str]) -> dict[str, str]:
    """The secrets' names, each with ``REDACTED`` for its value."""
    return {name: REDACTED for name in secret_env}


def check_secret_env(env: Mapping[str, str], secret_env: Mapping[str, str]) -> None:
    """Secrets follow env's bounds (checked together: one process environment) and do
    not share a name with a plain variable."""
    check_env(secret_env, "secret env", secret=True)
    both = sorted(set(env) & set(secret_env))
    if both:
        raise InvalidArgument(f"env and secret env both name {quoted(', '.join(both), 200)}",
                              field="secret_env")
    check_env({**env, **secret_env})

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}\Z")


def canonical_json(content: object) -> str:
    """Stable JSON text: sorted keys, no spaces, non-ASCII kept as is."""
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_of(content: object) -> str:
    """Hex sha256 of ``canonical_json(content)`` encoded as UTF-8."""
    return hashlib.sha256(canonical_json(content).encode("utf-8")).hexdigest()


class StateMode(StrEnum):
    """How an instance keeps state on its host.

    ``none``: no state directory; ``shared``: one directory per unit and host, shared by
    every instance of it (blue and green see the same files); ``snapshot``: one directory
    per instance, copied to its replacement (green starts from blue's state) and backed up
    before collection.
    """

    NONE = "none"
    SHARED = "shared"
    SNAPSHOT = "snapshot"


@dataclass(frozen=True)
class HealthCheck:
    """How an instance proves it is healthy: an HTTP GET, or a command when one is given.

    The one health type of Landlord, with the one set of defaults every side uses (the
    publish API, the stream, the agent, the data plane's backend check): Kubernetes'
    probe defaults (period 10 s, timeout 1 s, failure threshold 3) on ``/healthz``. A
    loopback probe costs the agent ~2 ms of CPU, so 50 instances at 10 s cost ~1 % of a
    core; the agent probes starting instances faster until they are ready.
    """

    path: str = "/healthz"
    """HTTP path probed on the instance's port (used when ``command`` is empty)."""
    command: tuple[str, ...] = ()
    """Command run inside the container instead of the HTTP probe; exit 0 is healthy."""
    interval_s: float = 10.0
    """Seconds between probes."""
    timeout_s: float = 1.0
    """Seconds before one probe counts as failed."""
    retries: int = 3
    """Consecutive failed probes before the instance is unhealthy."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "command", tuple(self.command))
        # the path is also HAProxy's backend check (``option httpchk GET <path>``)
        if self.path or not self.command:
            check_path("health_check.path", self.path)
        check_argv("health_check.command", self.command)
        for name in ("interval_s", "timeout_s"):
            check_seconds(f"health_check.{name}", getattr(self, name), MAX_HEALTH_SECONDS,
                          positive=True)
        check_count("health_check.retries", self.retries, 1, MAX_HEALTH_COUNT)

    def to_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "command": list(self.command),
            "interval_s": float(self.interval_s),
            "timeout_s": float(self.timeout_s),
            "retries": self.retries,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> HealthCheck:
        if not isinstance(data, Mapping):
            raise InvalidArgument(f"health_check must be a JSON object, got {quoted(data)}")
        known = {"path", "command", "interval_s", "timeout_s", "retries"}
        _refuse_unknown("health_check", data, known)
        command = data.get("command", [])
        if not isinstance(command, list | tuple):
            raise InvalidArgument("health_check.command must be a list of strings")
        return cls(
            path=_str(data.get("path", DEFAULT_HEALTH.path), "health_check.path"),
            command=tuple(command),
            interval_s=data.get("interval_s", DEFAULT_HEALTH.interval_s),  # type: ignore[arg-type]
            timeout_s=data.get("timeout_s", DEFAULT_HEALTH.timeout_s),  # type: ignore[arg-type]
            retries=data.get("retries", DEFAULT_HEALTH.retries),  # type: ignore[arg-type]
        )


DEFAULT_HEALTH = HealthCheck()
"""The defaults, for those who fill a zero field of a message or setting."""


_RUN_DEFAULTS: Mapping[str, object] = MappingProxyType({
    "service_port": 0,
    "state_mode": StateMode.NONE.value,
    "idle_timeout_s": 0.0,
    "warmup_s": 0.0,
    "healthy_threshold": 1,
    "image_digest": "",
    "network_mode": NetworkMode.UNSET.value,
    "run_as_root": False,
})
"""Fields the spec gained after versions were first published. ``content()`` leaves out
the ones at these values, so a version published before a field existed (which then ran
with this value) keeps its checksum, and any other value changes it."""


@dataclass(frozen=True)
class UnitSpec:
    """One version of a unit as submitted for publishing."""

    apartment: str
    unit: str
    version: str
    image: str
    """The image as published: a reference naming a registry
    (``127.0.0.1:5000/app:1.0.0``), a bare local name the hosts hold, or an image id."""
    port: int
    """Port every instance listens on (env PORT); 0: the port placement assigns each one."""
    command: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    health_check: HealthCheck = field(default_factory=HealthCheck)
    resources: Resources = field(default_factory=Resources)
    dependencies: tuple[str, ...] = ()
    """``name@range`` specs; bare names are in this unit's apartment."""
    service_port: int = 0
    """Port of the unit's entry point on every host's data plane (0: no entry point)."""
    state_mode: StateMode = StateMode.NONE
    idle_timeout_s: float = 0.0
    """Seconds without activity before garbage collection may remove an instance; 0: never."""
    warmup_s: float = 0.0
    """Seconds after an instance starts before failed health probes count."""
    healthy_threshold: int = 1
    """Consecutive passing probes that make an instance healthy (``health_check.retries``
    is the failing count)."""
    image_digest: str = ""
    """Manifest digest (``sha256:...``) the registry named for ``image`` at publication;
    "" for a bare local name (never resolved through a registry)."""
    secret_env: Mapping[str, str] = field(default_factory=dict, repr=False)
    """Env whose values are secret: given to the container, stored for it, never shown."""
    network_mode: NetworkMode = NetworkMode.UNSET
    """``host`` or ``bridge`` (``common.network_modes``); unset runs as the default."""
    run_as_root: bool = False
    """Run the processes as root; else as the image's declared user, or as uid/gid 65532
    when the image declares none or root (agent/instances/run_as.py)."""

    def __post_init__(self) -> None:
        qualify(self.unit, self.apartment)
        if "/" in self.unit:
            raise InvalidArgument(
                f"unit {self.unit!r} must be a bare name; the apartment is a separate field",
                field="unit",
            )
        parse_version(self.version)
        if not isinstance(self.image, str) or not self.image.strip():
            raise InvalidArgument("image must name an image id or digest", field="image")
        check_text("image", self.image, MAX_REFERENCE, forbid="\0\r\n\t ")
        _check_port(self.port, "port")
        _check_port(self.service_port, "service_port")
        object.__setattr__(self, "command", tuple(self.command))
        check_argv("command", self.command)
        env = dict(self.env)
        check_env(env)
        object.__setattr__(self, "env", MappingProxyType(env))
        if not isinstance(self.secret_env, Mapping):
            raise InvalidArgument("secret_env must map names to strings", field="secret_env")
        secrets = dict(self.secret_env)
        check_secret_env(env, secrets)
        object.__setattr__(self, "secret_env", MappingProxyType(secrets))
        object.__setattr__(self, "dependencies", tuple(self.dependencies))
        check_length("dependencies", self.dependencies, MAX_DEPENDENCIES)
        if not isinstance(self.resources, Resources):
            raise InvalidArgument("resources must be cpu, memory, storage and network",
                                  field="resources")
        check_amounts(self.resources.to_dict())
        for spec in self.dependencies:
            parse_dependency(spec, self.apartment)
        try:
            object.__setattr__(self, "state_mode", StateMode(self.state_mode))
        except ValueError:
            raise InvalidArgument(
                f"state_mode must be one of {', '.join(StateMode)}, got "
                f"{quoted(self.state_mode)}",
                field="state_mode",
            ) from None
        for name, high in (("idle_timeout_s", MAX_IDLE_TIMEOUT_S), ("warmup_s", MAX_WARMUP_S)):
            object.__setattr__(self, name, check_seconds(name, getattr(self, name), high))
        if not isinstance(self.image_digest, str) or (
            self.image_digest and not _DIGEST.fullmatch(self.image_digest)
        ):
            raise InvalidArgument(
                f"image_digest must be sha256:<64 hex digits>, got {quoted(self.image_digest)}",
                field="image_digest",
            )
        check_count("healthy_threshold", self.healthy_threshold, 1, MAX_HEALTH_COUNT)
        object.__setattr__(self, "network_mode", parse_network_mode(self.network_mode))
        if not isinstance(self.run_as_root, bool):
            raise InvalidArgument(f"run_as_root must be true or false, got "
                                  f"{quoted(self.run_as_root)}", field="run_as_root")

    @property
    def name(self) -> str:
        """Qualified name, ``apartment/unit``."""
        return f"{self.apartment}/{self.unit}"

    @property
    def run_image(self) -> str:
        """The reference agents run: ``NAME@DIGEST`` once publishing resolved a digest, so
        a tag moved later in the registry changes nothing; else ``image`` as published."""
        if not self.image_digest:
            return self.image
        return parse_image_ref(self.image).pinned(self.image_digest)

    def _run_fields(self) -> dict[str, object]:
        return {
            "service_port": self.service_port,
            "state_mode": self.state_mode.value,
            "idle_timeout_s": self.idle_timeout_s,
            "warmup_s": self.warmup_s,
            "healthy_threshold": self.healthy_threshold,
            "image_digest": self.image_digest,
            "network_mode": self.network_mode.value,
            "run_as_root": self.run_as_root,
        }

    def content(self) -> dict[str, object]:
        """Exactly what the checksum covers: everything that runs, with dependencies
        qualified and sorted (fields at their ``_RUN_DEFAULTS`` value left out)."""
        deps = sorted(str(parse_dependency(s, self.apartment)) for s in self.dependencies)
        later = {k: v for k, v in self._run_fields().items() if v != _RUN_DEFAULTS[k]}
        if self.secret_env:  # names only: a secret's value never reaches the checksum
            later["secret_env"] = sorted(self.secret_env)
        return {
            "image": self.image,
            "command": list(self.command),
            "env": dict(self.env),
            "port": self.port,
            "health_check": self.health_check.to_dict(),
            "resources": self.resources.to_dict(),
            "dependencies": deps,
            **later,
        }

    def checksum(self) -> str:
        return sha256_of(self.content())

    def to_dict(self) -> dict[str, object]:
        """Everything, secret values included: the stored form (etcd), never an answer.
        ``secret_env`` only when there are secrets, so a record without them reads in a
        release before them."""
        data: dict[str, object] = {
            "apartment": self.apartment,
            "unit": self.unit,
            "version": self.version,
            **self.content(),
            **self._run_fields(),
            "dependencies": list(self.dependencies),
        }
        if self.secret_env:
            data["secret_env"] = dict(self.secret_env)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> UnitSpec:
        if not isinstance(data, Mapping):
            raise InvalidArgument(f"a unit spec must be a JSON object, got {quoted(data)}")
        known = {"apartment", "unit", "version", "image", "port", "command", "env",
                 "health_check", "resources", "dependencies", "secret_env", *_RUN_DEFAULTS}
        _refuse_unknown("unit spec", data, known)
        health, resources = data.get("health_check", {}), data.get("resources", {})
        env, secret_env = data.get("env", {}), data.get("secret_env", {})
        if not isinstance(health, Mapping) or not isinstance(resources, Mapping):
            raise InvalidArgument("health_check and resources must be objects")
        if not isinstance(env, Mapping):
            raise InvalidArgument("env must map names to strings", field="env")
        if not isinstance(secret_env, Mapping):
            raise InvalidArgument("secret_env must map names to strings", field="secret_env")
        later = {k: data.get(k, default) for k, default in _RUN_DEFAULTS.items()}
        return cls(
            apartment=_str(data.get("apartment"), "apartment"),
            unit=_str(data.get("unit"), "unit"),
            version=_str(data.get("version"), "version"),
            image=_str(data.get("image"), "image"),
            port=data.get("port"),  # type: ignore[arg-type]  # validated in __post_init__
            command=tuple(_str_list(data.get("command", []), "command")),
            env=env,
            health_check=HealthCheck.from_dict(health),
            resources=Resources.from_dict(resources),
            dependencies=tuple(_str_list(data.get("dependencies", []), "dependencies")),
            secret_env=secret_env,
            **later,  # type: ignore[arg-type]  # validated in __post_init__
        )


def _check_port(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not (0 <= value <= 65535):
        raise InvalidArgument(f"{name} must be 0-65535, got {quoted(value)}", field=name)
    check_service_port(name, value)


def _refuse_unknown(what: str, data: Mapping[str, object], known: set[str]) -> None:
    unknown = sorted(str(key) for key in set(data) - known)
    if unknown:
        raise InvalidArgument(
            f"unknown {what} field(s): {quoted(', '.join(unknown), 200)}; known: "
            f"{', '.join(sorted(known))}",
            field=quoted(unknown[0]),
        )


def _str(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{name} must be a string, got {quoted(value)}", field=name)
    return value


def _str_list(value: object, name: str) -> Sequence[str]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"{name} must be a list of strings", field=name)
    return value
