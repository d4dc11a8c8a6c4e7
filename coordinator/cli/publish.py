"""From `units publish` flags to a PublishVersionRequest, without talking to anyone."""

from __future__ import annotations

import json
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from common.dependencies import qualify
from common.errors import InvalidArgument
from common.gen.landlord.v1 import admin_pb2, types_pb2
from common.input_bounds import check_path
from common.network_modes import parse_network_mode
from common.resources import parse_bandwidth, parse_bytes, parse_cpu
from coordinator.cli.arguments import (
    parse_dependency,
    parse_key_values,
    parse_unit_ref,
    parse_version,
)
from coordinator.cli.durations import duration_to_proto, parse_duration

__all__ = [
    "CHANGE_KINDS",
    "STATE_MODES",
    "ChangeLists",
    "PublishArgs",
    "build_publish_request",
    "load_change_file",
    "parse_change_document",
]

CHANGE_KINDS = ("breaking", "features", "fixes", "internal")
STATE_MODES = {
    "none": types_pb2.STATE_MODE_UNSPECIFIED,
    "shared": types_pb2.STATE_MODE_SHARED,
    "snapshot": types_pb2.STATE_MODE_SNAPSHOT,
}


@dataclass(frozen=True)
class ChangeLists:
    """What changed in a version, by kind; decides the required semver bump."""

    breaking: tuple[str, ...] = ()
    features: tuple[str, ...] = ()
    fixes: tuple[str, ...] = ()
    internal: tuple[str, ...] = ()

    def __add__(self, other: ChangeLists) -> ChangeLists:
        return ChangeLists(
            self.breaking + other.breaking,
            self.features + other.features,
            self.fixes + other.fixes,
            self.internal + other.internal,
        )


@dataclass(frozen=True)
class PublishArgs:
    """The flags of `landlord units publish`, as typed (strings still unparsed)."""

    unit: str
    version: str
    image: str
    command: str | None = None
    port: int | None = None
    service_port: int | None = None
    health_path: str | None = None
    health_command: str | None = None
    health_interval: str | None = None
    health_timeout: str | None = None
    warmup: str | None = None
    env: tuple[str, ...] = ()
    secret_env: tuple[str, ...] = ()
    """--secret-env KEY=VALUE items."""
    secret_env_file: Path | None = None
    """--secret-env-file: KEY=VALUE lines (blank lines and '#' comments skipped)."""
    cpu: str | None = None
    memory: str | None = None
    storage: str | None = None
    network: str | None = None
    dependencies: tuple[str, ...] = ()
    state_mode: str | None = None
    idle_timeout: str | None = None
    network_mode: str | None = None
    """--network-mode: bridge or host (``common.network_modes``)."""
    run_as_root: bool = False
    """--run-as-root: the one way to run a unit's processes as root."""
    metadata: tuple[str, ...] = ()
    changes: ChangeLists = field(default_factory=ChangeLists)
    """Changes from --breaking/--feature/--fix/--internal, plus those of --changes FILE."""


def build_publish_request(args: PublishArgs) -> admin_pb2.PublishVersionRequest:
    """Validate every flag and build the request; raises InvalidArgument on bad input."""
    ref = parse_unit_ref(args.unit)
    if not args.image.strip():
        raise InvalidArgument("--image: an image name or id is required", field="--image")
    spec = types_pb2.UnitSpec(apartment=ref.apartment, unit=ref.unit, image=args.image.strip())
    if args.command is not None:
        spec.command.extend(_split_command(args.command))
    if args.port is not None:
        spec.port = _port(args.port, "--port", allow_zero=True)
    if args.service_port is not None:
        spec.service_port = _port(args.service_port, "--service-port", allow_zero=False)
    _fill_health(spec.health, args)
    spec.env.update(parse_key_values(args.env, "--env"))
    spec.secret_env.update(secret_env(args.secret_env, args.secret_env_file))
    _fill_resources(spec.resources, args)
    spec.dependencies.extend(_dependencies(args.dependencies, ref.apartment))
    if args.state_mode is not None:
        spec.state_mode = _state_mode(args.state_mode)
    if args.idle_timeout is not None:
        spec.idle_timeout.CopyFrom(
            duration_to_proto(parse_duration(args.idle_timeout, "--idle-timeout"))
        )
    if args.network_mode is not None:
        spec.network_mode = parse_network_mode(args.network_mode, "--network-mode").value
    spec.run_as_root = args.run_as_root
    request = admin_pb2.PublishVersionRequest(
        spec=spec, version=parse_version(args.version, "version")
    )
    for kind in CHANGE_KINDS:
        getattr(request.changes, kind).extend(getattr(args.changes, kind))
    request.metadata.update(parse_key_values(args.metadata, "--metadata"))
    return request


def secret_env(items: tuple[str, ...], path: Path | None) -> dict[str, str]:
    """Secrets from --secret-env items and a --secret-env-file; errors never quote a value."""
    sources = [(f"--secret-env #{n}", item) for n, item in enumerate(items, 1)]
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            reason = getattr(err, "strerror", None) or str(err)
            raise InvalidArgument(f"--secret-env-file {path}: {reason}",
                                  field="--secret-env-file") from None
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip() and not line.lstrip().startswith("#"):
                sources.append((f"--secret-env-file {path} line {n}", line))
    result: dict[str, str] = {}
    for where, item in sources:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key or any(ch.isspace() for ch in key):
            raise InvalidArgument(f"{where}: expected KEY=VALUE", field="--secret-env")
        if key in result:
            raise InvalidArgument(f"{where}: secret {key!r} is given twice",
                                  field="--secret-env")
        result[key] = value
    return result


def _split_command(command: str, flag: str = "--command") -> list[str]:
    try:
        words = shlex.split(command)
    except ValueError as err:
        raise InvalidArgument(f"{flag}: {err} in {command!r}", field=flag) from None
    if not words:
        raise InvalidArgument(f"{flag}: empty command", field=flag)
    return words


def _port(value: int, field_name: str, allow_zero: bool) -> int:
    low = 0 if allow_zero else 1
    if not low <= value <= 65535:
        raise InvalidArgument(
            f"{field_name}: {value} is not a port ({low}..65535)", field=field_name, value=value
        )
    return value


def _fill_health(health: types_pb2.HealthCheck, args: PublishArgs) -> None:
    if args.health_path is not None:
        check_path("--health-path", args.health_path)
        health.path = args.health_path
    if args.health_command is not None:
        health.command.extend(_split_command(args.health_command, "--health-command"))
    for flag, text, target in (
        ("--health-interval", args.health_interval, health.interval),
        ("--health-timeout", args.health_timeout, health.timeout),
        ("--warmup", args.warmup, health.warmup),
    ):
        if text is not None:
            target.CopyFrom(duration_to_proto(parse_duration(text, flag)))


def _fill_resources(resources: types_pb2.Resources, args: PublishArgs) -> None:
    if args.cpu is not None:
        resources.cpu_millis = round(parse_cpu(args.cpu, "--cpu") * 1000)
    if args.memory is not None:
        resources.memory_bytes = parse_bytes(args.memory, "--memory")
    if args.storage is not None:
        resources.storage_bytes = parse_bytes(args.storage, "--storage")
    if args.network is not None:
        resources.network_bps = parse_bandwidth(args.network, "--network")


def _dependencies(items: tuple[str, ...], apartment: str) -> list[str]:
    deps = [parse_dependency(item, apartment, "--dep") for item in items]
    names = [qualify(dep.partition("@")[0], apartment) for dep in deps]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InvalidArgument(
            f"--dep: {', '.join(repeated)} is named more than once; give one range per unit",
            field="--dep",
        )
    return deps


def _state_mode(text: str) -> types_pb2.StateMode.ValueType:
    mode = STATE_MODES.get(text.strip().lower())
    if mode is None:
        raise InvalidArgument(
            f"--state-mode: {text!r} is not one of {', '.join(STATE_MODES)}",
            field="--state-mode",
        )
    return mode


def parse_change_document(text: str, source: str, fmt: str | None = None) -> ChangeLists:
    """The four change lists from a TOML or JSON document (format guessed when None)."""
    kind = fmt or ("json" if text.lstrip().startswith(("{", "[")) else "toml")
    try:
        data: object = json.loads(text) if kind == "json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as err:
        raise InvalidArgument(
            f"--changes: {source} is not valid {kind.upper()}: {err}", field="--changes"
        ) from None
    if not isinstance(data, dict):
        raise InvalidArgument(
            f"--changes: {source} must hold a table/object with the lists "
            f"{', '.join(CHANGE_KINDS)}",
            field="--changes",
        )
    unknown = sorted(set(data) - set(CHANGE_KINDS))
    if unknown:
        raise InvalidArgument(
            f"--changes: {source} has unknown key(s) {', '.join(unknown)}; "
            f"known: {', '.join(CHANGE_KINDS)}",
            field="--changes",
        )
    lists: dict[str, tuple[str, ...]] = {}
    for kind_name in CHANGE_KINDS:
        value = data.get(kind_name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidArgument(
                f"--changes: {kind_name!r} in {source} must be a list of strings",
                field="--changes",
            )
        lists[kind_name] = tuple(value)
    return ChangeLists(**lists)


def load_change_file(path: Path) -> ChangeLists:
    """Read --changes FILE (``.json`` is JSON, ``.toml`` TOML, otherwise guessed)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InvalidArgument(
            f"--changes: cannot read {path}: {getattr(err, 'strerror', None) or err}",
            field="--changes",
        ) from None
    suffix = path.suffix.lower().lstrip(".")
    return parse_change_document(text, str(path), suffix if suffix in ("json", "toml") else None)
