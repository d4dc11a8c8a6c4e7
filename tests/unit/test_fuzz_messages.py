"""The fuzz suite's requests come from the descriptors: every Admin RPC is covered (a new one
too, without a change to tests/fuzz), every field of its request gets values, and every
generated request is a well-formed message of the right type."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import duration_pb2
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings

from common.errors import LandlordError
from common.gen.landlord.v1 import admin_pb2, admin_pb2_grpc, agent_pb2
from coordinator.api.rollout_proto import deploy_from_pb
from tests.fuzz.conftest import PUBLISHED, deploy_templates, templates
from tests.fuzz.harness import past_validation
from tests.fuzz.messages import Hints, RpcMethod, methods_of, request_strategy
from tests.fuzz.test_fuzz_admin import ADMIN

HINTS = Hints(rollout_ids=("r-1",))


def test_every_method_of_the_admin_service_is_fuzzed() -> None:
    served = {name for name in vars(admin_pb2_grpc.AdminServicer) if not name.startswith("_")}
    assert {m.name for m in ADMIN} == served
    # the harness sends one request per call (unary or server streaming): a client-streaming
    # Admin RPC would need a way to send it there first
    assert not [m.name for m in ADMIN if m.client_streaming]
    assert {"WatchRollout", "StreamEvents"} <= {m.name for m in ADMIN if m.server_streaming}


def test_methods_carry_their_request_type_and_path() -> None:
    (session,) = methods_of(agent_pb2.DESCRIPTOR.services_by_name["AgentStream"])
    assert session.path == "/landlord.v1.AgentStream/Session"
    assert session.request is agent_pb2.AgentMessage
    assert session.client_streaming and session.server_streaming
    deploy = next(m for m in ADMIN if m.name == "Deploy")
    assert deploy.request is admin_pb2.DeployRequest


def _set_fields(message: Message, path: str = "") -> set[str]:
    found = set()
    for fd, value in message.ListFields():
        name = f"{path}{fd.name}"
        found.add(name)
        if fd.message_type is not None and not fd.message_type.GetOptions().map_entry:
            for item in value if fd.is_repeated else [value]:
                found |= _set_fields(item, name + ".")
    return found


@pytest.mark.parametrize("method", ADMIN, ids=lambda m: m.name)
def test_every_request_field_is_generated_and_requests_round_trip(method: RpcMethod) -> None:
    seen: set[str] = set()

    @settings(max_examples=40, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(request_strategy(method, HINTS))
    def draw(request: Message) -> None:
        assert isinstance(request, method.request)
        wire = request.SerializeToString(deterministic=True)  # NaN != NaN: compare bytes
        assert method.request.FromString(wire).SerializeToString(deterministic=True) == wire
        seen.update(_set_fields(request))

    draw()
    top = {fd.name for fd in method.request.DESCRIPTOR.fields}
    assert top <= seen, top - seen


def test_hints_name_the_fields_they_fit() -> None:
    hints = Hints(apartments=("shop",), units=("web",), versions=("1.0.0",),
                  host_ids=("h1",), rollout_ids=("r-1",), extra={"instance_id": ("i-1",)})
    assert hints.for_field("apartment") == ("shop",)
    assert hints.for_field("unit") == ("web",)
    assert hints.for_field("to_version") == ("1.0.0",)
    assert hints.for_field("dependencies") == ("web@^1.0.0",)
    assert hints.for_field("host_id") == ("h1",)
    assert hints.for_field("rollout_id") == ("r-1",)
    assert hints.for_field("instance_id") == ("i-1",)
    assert hints.for_field("message") == ()


def test_deploy_templates_pass_validation_and_deep_requests_keep_their_references() -> None:
    for template in deploy_templates(duration_pb2.Duration(seconds=1)):
        deploy_from_pb(template)  # raises on a template the coordinator refuses
    published = {("shop", unit, version) for unit, version, _, _ in PUBLISHED}
    kept = frozenset({"apartment", "unit", "version"})
    hints = Hints(templates=templates(), kept={"landlord.v1.DeployRequest": kept})
    deploy = next(m for m in ADMIN if m.name == "Deploy")
    valid = 0

    @settings(max_examples=200, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(request_strategy(deploy, hints))
    def draw(request: admin_pb2.DeployRequest) -> None:
        nonlocal valid
        try:
            deploy_from_pb(request)
        except LandlordError:
            return
        valid += (request.apartment, request.unit, request.version) in published

    draw()
    # the deep requests (half of all) keep published references; many pass the settings checks
    assert valid >= 40, valid


@pytest.mark.parametrize(("code", "details", "past"), [
    (grpc.StatusCode.OK, "", True),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "not enough cpu", True),
    (grpc.StatusCode.FAILED_PRECONDITION,
     "shop/web already has an active rollout r-1 (1.0.0 -> 1.1.0, canary)", True),
    (grpc.StatusCode.FAILED_PRECONDITION, "building default has no placeable host to place "
     "shop/web on (h1 cordoned)", True),
    (grpc.StatusCode.FAILED_PRECONDITION, "shop/web already runs 1.0.0", False),
    (grpc.StatusCode.INVALID_ARGUMENT, "replicas must be 1..1000", False),
])
def test_deploys_past_validation_are_the_ones_placement_or_one_rollout_decided(
        code: grpc.StatusCode, details: str, past: bool) -> None:
    assert past_validation(code, details) is past
