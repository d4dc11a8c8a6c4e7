"""The ranges every count, duration, size and string a user supplies must fall in.

Checked once, in the domain core (``UnitSpec``, ``HealthCheck``, the rollout settings and
their plans), so the coordinator, the agent and the CLI refuse the same things. Each bound
matches what the runtime accepts or stays far inside it, and is checked before any work
proportional to the value is done (a step count of 2^31-1 is refused, never expanded):

===========================  =============  ================================================
what                         range          why this bound
===========================  =============  ================================================
replicas of a deploy         1-1000         placement and the record grow with it
gradual steps                1-100          a step is a whole percentage
performance requests         0-10000        a burst of ~50 probes is typical
integration checks           0-32           each is a request or ``docker exec``
env variables                0-1024         with names <= 256 bytes ``[A-Za-z_][A-Za-z0-9_]*``
env value                    <= 32 KiB      no NUL, CR or LF (Docker's ``KEY=VALUE`` form)
env total                    <= 256 KiB     names and values; Linux's ARG_MAX is 2 MiB
command / argv               <= 1024 args   each <= 32 KiB (Linux MAX_ARG_STRLEN: 128 KiB),
                                            all <= 128 KiB, no NUL
health and check paths       <= 1024 bytes  start with '/', only RFC 3986 path and query
                                            characters; no quote, space, CR, LF (HAProxy's
                                            ``option httpchk`` line and the request line)
dependencies                 0-64           each range <= 256 characters
version                      <= 128 chars   Docker's tag limit; a header value and a label
cpu per instance             <= 256 cores   (256000 millicores)
memory per instance          <= 4 TiB
storage per instance         <= 64 TiB
network per instance         <= 400 Gbit/s
health interval and timeout  (0, 3600] s    HAProxy timers are 32-bit milliseconds
retries, healthy threshold   1-100
warm-up                      <= 1 day
idle timeout                 <= 365 days
rollout durations            <= 7 days      monitor, delays, deadlines, clean-up
latency thresholds           <= 1 hour
expected text of a check     <= 1 KiB
change entries of a publish  <= 100 a kind  each <= 512 bytes, no NUL
metadata of a publish        <= 64 entries  keys <= 256 bytes, values <= 4 KiB, all <= 64 KiB
a message to the coordinator <= 4 MiB       a publish within the bounds above is < 1 MiB;
                                            grpc refuses a larger one from its length
                                            prefix, before reading it (RESOURCE_EXHAUSTED,
                                            ``request_too_large``): admin requests and
                                            agent messages alike (one listener, one limit;
                                            a Register holds ~6,000 instances at the
                                            longest names)
other admin requests         <= 256 KiB     all but PublishVersion and Deploy: names, a
                                            few numbers, an exec argv (<= 128 KiB);
                                            checked before parsing (INVALID_ARGUMENT)
===========================  =============  ================================================

Together these keep a version's record (env, commands, metadata, changes) under about
800 KiB, well inside etcd's 1.5 MiB request limit: a publish that broke it used to come
back UNAVAILABLE, which looks retryable.
service port                 not in ``CONTROL_PLANE_PORTS`` (22, 2379, 2380, 7400)

Error texts quote at most ``QUOTE_PREFIX`` characters of an input (``quoted``), so a huge
value never comes back in a status message (whose metadata has its own size limit).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sized
from types import MappingProxyType

from common.errors import InvalidArgument

__all__ = [
    "CONTROL_PLANE_PORTS",
    "ENV_NAME",
    "MAX_ADMIN_REQUEST_BYTES",
    "MAX_ARGS",
    "MAX_ARG_BYTES",
    "MAX_CHANGE_BYTES",
    "MAX_CHANGE_ENTRIES",
    "MAX_CHECKS",
    "MAX_COMMAND_BYTES",
    "MAX_CPU_CORES",
    "MAX_DEPENDENCIES",
    "MAX_ENV_NAME_BYTES",
    "MAX_ENV_TOTAL_BYTES",
    "MAX_ENV_VALUE_BYTES",
    "MAX_ENV_VARS",
    "MAX_EXPECTED_TEXT_BYTES",
    "MAX_GRADUAL_STEPS",
    "MAX_HEALTH_COUNT",
    "MAX_HEALTH_SECONDS",
    "MAX_IDLE_TIMEOUT_S",
    "MAX_LATENCY_MS",
    "MAX_MEMORY_BYTES",
    "MAX_METADATA_ENTRIES",
    "MAX_METADATA_KEY_BYTES",
    "MAX_METADATA_TOTAL_BYTES",
    "MAX_METADATA_VALUE_BYTES",
    "MAX_NETWORK_BPS",
    "MAX_PATH_BYTES",
    "MAX_PERFORMANCE_REQUESTS",
    "MAX_REPLICAS",
    "MAX_ROLLOUT_SECONDS",
    "MAX_SMALL_REQUEST_BYTES",
    "MAX_STORAGE_BYTES",
    "MAX_WARMUP_S",
    "QUOTE_PREFIX",
    "RESOURCE_LIMITS",
    "check_amounts",
    "check_argv",
    "check_count",
    "check_env",
    "check_length",
    "check_metadata",
    "check_path",
    "check_seconds",
    "check_service_port",
    "check_text",
    "quoted",
    "request_too_large",
]

MAX_REPLICAS = 1000
MAX_GRADUAL_STEPS = 100
MAX_PERFORMANCE_REQUESTS = 10_000
MAX_CHECKS = 32
MAX_ENV_VARS = 1024
MAX_ENV_NAME_BYTES = 256
MAX_ENV_VALUE_BYTES = 32 * 1024
MAX_ENV_TOTAL_BYTES = 256 * 1024
MAX_ARGS = 1024
MAX_ARG_BYTES = 32 * 1024
MAX_COMMAND_BYTES = 128 * 1024
MAX_PATH_BYTES = 1024
MAX_DEPENDENCIES = 64
MAX_CPU_CORES = 256.0
MAX_MEMORY_BYTES = 4 << 40
MAX_STORAGE_BYTES = 64 << 40
MAX_NETWORK_BPS = 400 * 10**9
MAX_HEALTH_SECONDS = 3600.0
MAX_HEALTH_COUNT = 100
MAX_WARMUP_S = 86400.0
MAX_IDLE_TIMEOUT_S = 365 * 86400.0
MAX_ROLLOUT_SECONDS = 7 * 86400.0
MAX_EXPECTED_TEXT_BYTES = 1024
MAX_LATENCY_MS = 3_600_000.0
"""A latency threshold (p95 in milliseconds): one hour."""
RESOURCE_LIMITS: Mapping[str, float] = MappingProxyType({
    "cpu": MAX_CPU_CORES, "memory": MAX_MEMORY_BYTES, "storage": MAX_STORAGE_BYTES,
    "network": MAX_NETWORK_BPS})
"""What one instance may ask for, by ``Resources`` field."""
MAX_CHANGE_ENTRIES = 100
MAX_CHANGE_BYTES = 512
MAX_METADATA_ENTRIES = 64
MAX_METADATA_KEY_BYTES = 256
MAX_METADATA_VALUE_BYTES = 4096
MAX_METADATA_TOTAL_BYTES = 64 * 1024
MAX_ADMIN_REQUEST_BYTES = 4 << 20
"""Largest message the coordinator receives (its gRPC server's receive limit, so grpc
refuses a larger one before it holds it in memory)."""
MAX_SMALL_REQUEST_BYTES = 256 << 10
"""Largest request of an admin method other than PublishVersion and Deploy."""
_GRPC_TOO_LARGE = re.compile(r"Received message larger than max \((\d+) vs\. (\d+)\)")
MAX_VERSION_CHARS = 128
"""A version (Docker's tag limit; it is also the preview header's value and a label)."""
MAX_RANGE_CHARS = 256
QUOTE_PREFIX = 40
"""Characters of an input an error text quotes at most."""

CONTROL_PLANE_PORTS: Mapping[int, str] = MappingProxyType({
    22: "ssh",
    2379: "etcd's client port",
    2380: "etcd's peer port",
    7400: "the coordinator's gRPC port",  # common.transport.COORDINATOR_PORT
})
"""Ports of the host's control plane a unit's service port must not take."""

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""An environment variable's name (use ``fullmatch``)."""

_PATH = re.compile(r"/[A-Za-z0-9._~!$&()*+,;=:@%/?-]*")
"""RFC 3986 path and query characters, less the quote (HAProxy config) and '#'."""


def quoted(value: object, limit: int = QUOTE_PREFIX) -> str:
    """``repr(value)``, cut to ``limit`` characters (saying how long the whole was)."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f"{len(value)} characters" if isinstance(value, str) else f"{len(text)} in all"
    return f"{text[:limit]}... ({size})"


def check_count(name: str, value: object, low: int, high: int) -> int:
    """A whole number from ``low`` to ``high``, else InvalidArgument naming the range."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgument(
            f"{name} must be a whole number from {low} to {high}, got {quoted(value)}",
            field=name)
    return value


def check_seconds(name: str, value: object, high: float, *, positive: bool = False) -> float:
    """Finite seconds in ``[0, high]`` (``(0, high]`` when ``positive``)."""
    ok = (not isinstance(value, bool) and isinstance(value, int | float)
          and math.isfinite(value) and (value > 0 if positive else value >= 0)
          and value <= high)
    if not ok:
        low = "> 0" if positive else ">= 0"
        raise InvalidArgument(f"{name} must be seconds {low} and <= {high:g}, got "
                              f"{quoted(value)}", field=name)
    return float(value)  # type: ignore[arg-type]  # checked above


def check_length(name: str, items: Sized, high: int, what: str = "entries") -> None:
    """At most ``high`` items: checked before anything iterates over them."""
    if len(items) > high:
        raise InvalidArgument(f"{name} has {len(items)} {what}; at most {high} are allowed",
                              field=name)


def utf8_size(name: str, value: str) -> int:
    """How many bytes ``value`` takes in UTF-8; InvalidArgument (not quoting it) when it
    cannot be encoded (a lone surrogate, as undecodable bytes on a command line give)."""
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidArgument(f"{name} is not valid UTF-8 text", field=name) from None


def check_text(name: str, value: str, high: int, *, forbid: str = "\0") -> str:
    """A string of at most ``high`` UTF-8 bytes without any character of ``forbid``."""
    if len(value) > high or utf8_size(name, value) > high:
        raise InvalidArgument(f"{name} is longer than {high} bytes: {quoted(value)}",
                              field=name)
    bad = next((c for c in forbid if c in value), None)
    if bad is not None:
        raise InvalidArgument(f"{name} must not contain {bad!r}: {quoted(value)}", field=name)
    return value


def check_path(name: str, value: object) -> str:
    """An HTTP path (and query) safe in a request line and in HAProxy's configuration."""
    if not isinstance(value, str):
        raise InvalidArgument(f"{name} must be a string, got {quoted(value)}", field=name)
    check_text(name, value, MAX_PATH_BYTES)
    if not _PATH.fullmatch(value):  # fullmatch: "$" would let a final "\n" through
        raise InvalidArgument(
            f"{name} must start with '/' and hold only letters, digits and "
            f"-._~!$&()*+,;=:@%/? (no space, quote, CR or LF; percent-encode others), "
            f"got {quoted(value)}", field=name)
    return value


def check_env(env: Mapping[str, str], what: str = "env", *, secret: bool = False) -> None:
    """Count, names (``ENV_NAME``), value sizes and characters, and the total size.
    ``secret``: an error names the variable but never quotes its value."""
    check_length(what, env, MAX_ENV_VARS, "variables")
    total = 0
    for key, value in env.items():
        if not isinstance(key, str) or len(key) > MAX_ENV_NAME_BYTES \
                or not ENV_NAME.fullmatch(key) or not isinstance(value, str):
            raise InvalidArgument(
                f"{what} {quoted(key)}: names are letters, digits and '_' (not starting with "
                f"a digit, at most {MAX_ENV_NAME_BYTES} bytes) and values are strings",
                field=what)
        if secret:
            _check_secret_value(f"{what} {key}", value)
        else:
            check_text(f"{what} {key}", value, MAX_ENV_VALUE_BYTES, forbid="\0\r\n")
        total += len(key) + utf8_size(f"{what} {key}", value)
    if total > MAX_ENV_TOTAL_BYTES:
        raise InvalidArgument(f"{what} holds {total} bytes; at most {MAX_ENV_TOTAL_BYTES} "
                              "are allowed", field=what)


def _check_secret_value(name: str, value: str) -> None:
    """``check_text`` for env values, with errors that do not quote the value."""
    if utf8_size(name, value) > MAX_ENV_VALUE_BYTES:
        raise InvalidArgument(f"{name} is longer than {MAX_ENV_VALUE_BYTES} bytes", field=name)
    bad = next((c for c in "\0\r\n" if c in value), None)
    if bad is not None:
        raise InvalidArgument(f"{name} must not contain {bad!r}", field=name)


def check_metadata(metadata: Mapping[str, str]) -> None:
    """A publish's free-form metadata: entry count, key and value sizes, the total."""
    check_length("metadata", metadata, MAX_METADATA_ENTRIES)
    total = 0
    for key, value in metadata.items():
        if not isinstance(key, str) or not key or not isinstance(value, str):
            raise InvalidArgument("metadata maps non-empty names to strings", field="metadata")
        check_text("metadata key", key, MAX_METADATA_KEY_BYTES, forbid="\0\r\n")
        check_text(f"metadata {quoted(key)}", value, MAX_METADATA_VALUE_BYTES)
        total += len(key.encode()) + len(value.encode())  # both checked above
    if total > MAX_METADATA_TOTAL_BYTES:
        raise InvalidArgument(f"metadata holds {total} bytes; at most "
                              f"{MAX_METADATA_TOTAL_BYTES} are allowed", field="metadata")


def check_argv(name: str, argv: tuple[object, ...]) -> None:
    """At most ``MAX_ARGS`` strings, each <= ``MAX_ARG_BYTES``, all <= ``MAX_COMMAND_BYTES``,
    no NUL (execve cannot pass one)."""
    check_length(name, argv, MAX_ARGS, "arguments")
    total = 0
    for arg in argv:
        if not isinstance(arg, str):
            raise InvalidArgument(f"{name} must be a list of strings", field=name)
        check_text(f"{name} argument", arg, MAX_ARG_BYTES)
        total += utf8_size(f"{name} argument", arg) + 1
    if total > MAX_COMMAND_BYTES:
        raise InvalidArgument(f"{name} holds {total} bytes; at most {MAX_COMMAND_BYTES} are "
                              "allowed", field=name)


def check_service_port(name: str, value: int) -> None:
    """A unit's ports must not take a port of the host's control plane."""
    owner = CONTROL_PLANE_PORTS.get(value)
    if owner is not None:
        reserved = ", ".join(str(p) for p in sorted(CONTROL_PLANE_PORTS))
        raise InvalidArgument(f"{name} {value} is {owner} on every host; choose a port "
                              f"other than {reserved}", field=name)


def check_amounts(amounts: Mapping[str, float]) -> None:
    """One instance's resources (cpu in cores, memory and storage in bytes, network in
    bits per second) within ``RESOURCE_LIMITS``."""
    for name, value in amounts.items():
        high = RESOURCE_LIMITS.get(name)
        if high is not None and value > high:
            raise InvalidArgument(f"resources.{name} {quoted(value)} is more than one "
                                  f"instance may ask for ({high:g})", field=name)


def request_too_large(details: str) -> str | None:
    """The human text of grpc's own refusal of an oversized message ("Received message
    larger than max (N vs. M)"), else None: grpc writes that status before any of our code
    runs, so clients (the CLI) say it this way."""
    found = _GRPC_TOO_LARGE.search(details)
    if found is None:
        return None
    size, limit = int(found.group(1)), int(found.group(2))
    shown = f"{limit >> 20} MiB" if limit % (1 << 20) == 0 else f"{limit} bytes"
    return f"request too large: {size} bytes, limit {shown}"
