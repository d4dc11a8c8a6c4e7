"""coordinator/api/request_size.py: admin requests other than PublishVersion and Deploy are
refused past 256 KiB before they are parsed; other services' messages are left alone."""

from __future__ import annotations

import pytest

from common.gen.landlord.v1 import admin_pb2
from common.input_bounds import MAX_SMALL_REQUEST_BYTES, request_too_large
from coordinator.api.request_size import TooLarge, request_limit, size_guard, too_large_text

LIST_VERSIONS = "/landlord.v1.Admin/ListVersions"


def parsed(data: bytes) -> admin_pb2.ListVersionsRequest:
    return admin_pb2.ListVersionsRequest.FromString(data)


def test_a_small_method_past_its_limit_is_not_parsed() -> None:
    guard = size_guard(parsed, LIST_VERSIONS)
    assert guard is not None
    fits = admin_pb2.ListVersionsRequest(unit="w" * (MAX_SMALL_REQUEST_BYTES - 16))
    assert guard(fits.SerializeToString()) == fits
    big = admin_pb2.ListVersionsRequest(unit="w" * MAX_SMALL_REQUEST_BYTES).SerializeToString()
    refused = guard(big)
    assert refused == TooLarge(len(big), MAX_SMALL_REQUEST_BYTES)
    text = too_large_text(LIST_VERSIONS, refused)
    assert f"request too large: {len(big)} bytes, limit 256 KiB" in text


@pytest.mark.parametrize("method", ["/landlord.v1.Admin/PublishVersion",
                                    "/landlord.v1.Admin/Deploy",
                                    "/landlord.v1.AgentStream/Connect",
                                    "/grpc.health.v1.Health/Check"])
def test_full_size_methods_and_other_services_keep_their_deserializer(method: str) -> None:
    assert size_guard(parsed, method) is parsed
    assert size_guard(None, LIST_VERSIONS) is None


def test_limits_by_method() -> None:
    assert request_limit(LIST_VERSIONS) == MAX_SMALL_REQUEST_BYTES
    assert request_limit("/landlord.v1.Admin/Deploy") == 4 << 20
    assert request_too_large("Received message larger than max (5 vs. 4)") is not None
