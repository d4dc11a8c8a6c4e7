"""The error root: messages, context, and one gRPC status name per error."""

from __future__ import annotations

import inspect

import pytest

from common import errors
from common.errors import (
    BumpTooSmall,
    CircularDependency,
    Conflict,
    DependencyResolutionError,
    FailedPrecondition,
    InsufficientResources,
    InvalidArgument,
    InvalidTransition,
    InvalidVersion,
    LandlordError,
    NotFound,
    Unavailable,
    VersionExists,
)

# the gRPC status codes as named by grpc.StatusCode (common/ never imports grpc)
GRPC_STATUS_NAMES = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
}

EXPECTED = {
    InvalidArgument: "INVALID_ARGUMENT",
    InvalidTransition: "FAILED_PRECONDITION",
    InvalidVersion: "INVALID_ARGUMENT",
    BumpTooSmall: "FAILED_PRECONDITION",
    VersionExists: "ALREADY_EXISTS",
    DependencyResolutionError: "FAILED_PRECONDITION",
    CircularDependency: "FAILED_PRECONDITION",
    InsufficientResources: "RESOURCE_EXHAUSTED",
    NotFound: "NOT_FOUND",
    Conflict: "ABORTED",
    Unavailable: "UNAVAILABLE",
    FailedPrecondition: "FAILED_PRECONDITION",
}


@pytest.mark.parametrize(("cls", "code"), EXPECTED.items(), ids=lambda v: getattr(v, "__name__", v))
def test_each_error_maps_to_its_status(cls: type[LandlordError], code: str) -> None:
    assert cls.code == code
    assert issubclass(cls, LandlordError)


def test_every_public_error_is_covered_and_has_a_real_status_name() -> None:
    public = {
        obj
        for name, obj in vars(errors).items()
        if inspect.isclass(obj) and issubclass(obj, LandlordError) and obj is not LandlordError
    }
    assert public == set(EXPECTED)
    for cls in public:
        assert cls.code in GRPC_STATUS_NAMES


def test_message_is_str_and_context_is_kept() -> None:
    err = NotFound("unit web not found", unit="web", apartment="shop")
    assert str(err) == "unit web not found"
    assert err.context == {"unit": "web", "apartment": "shop"}
    assert "unit='web'" in repr(err)


def test_circular_dependency_is_a_resolution_error() -> None:
    with pytest.raises(DependencyResolutionError):
        raise CircularDependency("circular dependency: a -> b -> a", cycle=["a", "b", "a"])
