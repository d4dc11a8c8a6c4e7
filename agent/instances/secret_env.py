"""Secret env on the agent: kept in the root-only record, redacted everywhere else.

A container's ``landlord.spec`` label names the secrets with ``REDACTED`` values; a
container adopted without its record takes the values back from its own environment
(Docker's inspect ``Config.Env``), the one place besides the record that holds them. A
crash dump's inspect document gets the same redaction before it is written.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from agent.instances.spec import InstanceSpec
from common.unit_spec import REDACTED

__all__ = ["redact_env_lines", "redact_inspect", "restore_secrets"]


def redact_env_lines(lines: Iterable[str], names: Iterable[str]) -> list[str]:
    """``KEY=VALUE`` lines with the value of each secret name replaced by ``REDACTED``."""
    secret = set(names)
    out = []
    for line in lines:
        key, sep, _ = str(line).partition("=")
        out.append(f"{key}={REDACTED}" if sep and key in secret else str(line))
    return out


def redact_inspect(inspect: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """Docker's inspect document with the secrets' values in ``Config.Env`` redacted."""
    doc = dict(inspect)
    config = doc.get("Config")
    if isinstance(config, Mapping) and isinstance(config.get("Env"), list):
        doc["Config"] = {**config, "Env": redact_env_lines(config["Env"], names)}
    return doc


def restore_secrets(spec: InstanceSpec, env_lines: Iterable[str]) -> InstanceSpec:
    """``spec`` (rebuilt from a label) with its secrets' values taken from the container's
    ``KEY=VALUE`` environment; a secret missing there stays redacted."""
    if not spec.secret_env:
        return spec
    env = dict(str(line).partition("=")[::2] for line in env_lines)
    values = {name: env.get(name, REDACTED) for name in spec.secret_env}
    return dataclasses.replace(spec, secret_env=values)
