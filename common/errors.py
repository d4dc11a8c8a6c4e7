"""The one error root of Landlord and its few meaningful subclasses.

Every error carries a human message (``str(err)`` is exactly that message), keyword
context for logs and callers (``err.context``), and ``code``: the name of the one gRPC
status it maps to. ``common`` never imports grpc; the servicers translate ``code`` with
``grpc.StatusCode[err.code]`` at the boundary.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BumpTooSmall",
    "CircularDependency",
    "Conflict",
    "DependencyResolutionError",
    "FailedPrecondition",
    "InsufficientResources",
    "InvalidArgument",
    "InvalidTransition",
    "InvalidVersion",
    "LandlordError",
    "NotFound",
    "Unavailable",
    "VersionExists",
]


class LandlordError(Exception):
    """Root of every error Landlord raises on purpose."""

    code: ClassVar[str] = "UNKNOWN"

    def __init__(self, message: str, **context: object) -> None:
        super().__init__(message)
        self.message = message
        self.context: dict[str, object] = dict(context)

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        extra = "".join(f", {key}={value!r}" for key, value in self.context.items())
        return f"{type(self).__name__}({self.message!r}{extra})"


class InvalidArgument(LandlordError):
    """The request itself is malformed: a bad field, form or value."""

    code = "INVALID_ARGUMENT"


class FailedPrecondition(LandlordError):
    """The request is well formed but the system is not in a state that allows it."""

    code = "FAILED_PRECONDITION"


class InvalidTransition(FailedPrecondition):
    """A state machine was asked for a move its transition table does not allow."""


class InvalidVersion(InvalidArgument):
    """A version string is not semver, or a version rule is broken by the input alone."""


class BumpTooSmall(FailedPrecondition):
    """The new version's bump is smaller than the change set requires."""


class VersionExists(LandlordError):
    """The version is already published with different content (tags are immutable)."""

    code = "ALREADY_EXISTS"


class DependencyResolutionError(FailedPrecondition):
    """No set of published versions satisfies the dependency ranges."""


class CircularDependency(DependencyResolutionError):
    """The dependencies form a cycle; the message names the whole cycle."""


class InsufficientResources(LandlordError):
    """A host (or the building) lacks capacity; the message names each short dimension."""

    code = "RESOURCE_EXHAUSTED"


class NotFound(LandlordError):
    """The named unit, version, host, instance or rollout does not exist."""

    code = "NOT_FOUND"


class Conflict(LandlordError):
    """A concurrent change won (compare-and-swap lost); retrying may succeed."""

    code = "ABORTED"


class Unavailable(LandlordError):
    """A needed service (etcd, an agent, Docker) cannot be reached right now."""

    code = "UNAVAILABLE"
