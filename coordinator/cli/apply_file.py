"""A unit file for `landlord apply -f`: one version of one unit, how it runs and how it is
deployed, in TOML, with the same names and forms as the flags of `units publish` and
`deploy` (each key is a flag without its dashes, ``-`` written ``_``)::

    unit = "shop/web"
    version = "1.4.0"

    [publish]
    image = "registry.example:5000/web:1.4.0"
    service_port = 8080
    health_path = "/healthz"
    cpu = "250m"
    memory = "128Mi"
    env = { LOG_LEVEL = "info" }
    secret_env_file = "web.secrets"     # relative to this file; never the values here
    dependencies = ["shop/db@^2"]

    [publish.changes]
    features = ["search by tag"]

    [deploy]
    building = "eu-1"
    replicas = 3
    strategy = "canary"
    steps = [10, 50, 100]
    monitor = "2m"
    max_error_rate = "1%"

A file goes through exactly the checks the flags do (``build_publish_request``,
``build_deploy_request``): one definition of what is valid.
"""

from __future__ import annotations

import dataclasses
import shlex
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.errors import InvalidArgument
from coordinator.cli.publish import CHANGE_KINDS, ChangeLists, PublishArgs
from coordinator.cli.rollout_requests import DeployArgs

__all__ = ["UnitFile", "load_unit_file", "parse_unit_file"]

MAX_FILE = 1 << 20
_TOP = ("unit", "version", "publish", "deploy")
_LISTS = {"dependencies", "check_http", "check_command"}
_TABLES = {"env", "metadata"}
_PUBLISH_SKIP = {"unit", "version", "changes", "secret_env", "secret_env_file"}
_DEPLOY_SKIP = {"unit", "version"}


@dataclasses.dataclass(frozen=True)
class UnitFile:
    publish: PublishArgs
    deploy: DeployArgs


def load_unit_file(path: Path) -> UnitFile:
    """Read and check ``path``; raises InvalidArgument naming the file and the key."""
    try:
        if path.stat().st_size > MAX_FILE:
            raise InvalidArgument(f"{path}: larger than {MAX_FILE} bytes", field="-f")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise InvalidArgument(f"{path}: {reason}", field="-f") from None
    return parse_unit_file(text, str(path), path.parent)


def parse_unit_file(text: str, source: str, base: Path) -> UnitFile:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise InvalidArgument(f"{source} is not valid TOML: {err}", field="-f") from None
    _known(data, _TOP, source)
    unit, version = _text(data, "unit", source), _text(data, "version", source)
    publish = _table(data, "publish", source)
    deploy = _table(data, "deploy", source)
    return UnitFile(_publish_args(unit, version, publish, f"{source} [publish]", base),
                    _deploy_args(unit, version, deploy, f"{source} [deploy]"))


def _publish_args(unit: str, version: str, table: Mapping[str, Any], where: str,
                  base: Path) -> PublishArgs:
    fields = {f.name: f for f in dataclasses.fields(PublishArgs)}
    allowed = [n for n in fields if n not in _PUBLISH_SKIP] + ["changes", "secret_env_file"]
    _known(table, allowed, where)
    if "image" not in table:
        raise InvalidArgument(f"{where}: image is required", field="image")
    values: dict[str, Any] = {"unit": unit, "version": version}
    for name, value in table.items():
        if name == "changes":
            values["changes"] = _changes(value, f"{where} changes")
        elif name == "secret_env_file":
            values[name] = base / _string(value, name, where)
        elif name in ("command", "health_command") and isinstance(value, list):
            values[name] = shlex.join(_strings(value, name, where))
        else:
            values[name] = _value(name, value, fields[name].type, where)
    return PublishArgs(**values)


def _deploy_args(unit: str, version: str, table: Mapping[str, Any], where: str) -> DeployArgs:
    fields = {f.name: f for f in dataclasses.fields(DeployArgs)}
    _known(table, [n for n in fields if n not in _DEPLOY_SKIP], where)
    values: dict[str, Any] = {"unit": unit, "version": version}
    for name, value in table.items():
        if name == "steps" and isinstance(value, list):
            if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
                raise InvalidArgument(f"{where}: steps must be numbers, e.g. [10, 50, 100]",
                                      field="steps")
            value = ",".join(f"{v:g}" for v in value)
        values[name] = _value(name, value, fields[name].type, where)
    return DeployArgs(**values)


def _value(name: str, value: Any, annotation: Any, where: str) -> Any:
    kind = str(annotation)
    if name in _TABLES:
        if not isinstance(value, dict):
            raise InvalidArgument(f"{where}: {name} must be a table of KEY = \"value\"",
                                  field=name)
        return tuple(f"{k}={_string(v, f'{name}.{k}', where)}" for k, v in value.items())
    if name in _LISTS:
        return tuple(_strings(value, name, where))
    if kind.startswith("bool"):
        if not isinstance(value, bool):
            raise InvalidArgument(f"{where}: {name} must be true or false", field=name)
        return value
    if kind.startswith("int"):
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidArgument(f"{where}: {name} must be a whole number", field=name)
        return value
    if kind.startswith("float"):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise InvalidArgument(f"{where}: {name} must be a number", field=name)
        return float(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # cpu = 0.5, memory = 67108864: as typed on a command line
    return _string(value, name, where)


def _changes(value: Any, where: str) -> ChangeLists:
    if not isinstance(value, dict):
        raise InvalidArgument(f"{where} must be a table of lists ({', '.join(CHANGE_KINDS)})",
                              field="changes")
    _known(value, CHANGE_KINDS, where)
    return ChangeLists(**{k: tuple(_strings(v, k, where)) for k, v in value.items()})


def _known(table: Mapping[str, Any], allowed: Any, where: str) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise InvalidArgument(f"{where}: unknown key(s) {', '.join(unknown)}; known: "
                              f"{', '.join(sorted(allowed))}", field=unknown[0])


def _table(data: Mapping[str, Any], name: str, where: str) -> Mapping[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise InvalidArgument(f"{where}: [{name}] must be a table", field=name)
    return value


def _text(data: Mapping[str, Any], name: str, where: str) -> str:
    if name not in data:
        raise InvalidArgument(f"{where}: {name} is required", field=name)
    return _string(data[name], name, where)


def _string(value: Any, name: str, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{where}: {name} must be a string", field=name)
    return value


def _strings(value: Any, name: str, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"{where}: {name} must be a list of strings", field=name)
    return value
