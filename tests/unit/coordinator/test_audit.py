"""The audit trail: which calls it records, what it records of each, and that it never holds
up or fails the call it records."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.event_types import EventType
from common.gen.landlord.v1 import admin_pb2, types_pb2
from common.identity import Identity, Role
from coordinator.api import authz_interceptor
from coordinator.api.audit import AUDITED_METHODS, Caller, audit_entry, essentials
from coordinator.api.audit_interceptor import AuditInterceptor
from coordinator.api.authz import ADMIN_RULES, ADMIN_SERVICE, Access, method_path

PEER = "ipv4:127.0.0.1:50412"


def path(name: str) -> str:
    return method_path(ADMIN_SERVICE.full_name, name)


def test_audited_methods_are_exactly_the_write_methods_of_the_authz_table() -> None:
    writes = {name for name, rule in ADMIN_RULES.items() if rule.access is Access.WRITE}
    assert set(AUDITED_METHODS.values()) == writes
    assert {"PublishVersion", "Deploy", "ControlRollout", "Rollback",
            "RunGarbageCollection"} <= writes
    assert "ListUnits" not in AUDITED_METHODS.values()
    assert all(AUDITED_METHODS[path(name)] == name for name in writes)


def publish_request(env: dict[str, str] | None = None, metadata: dict[str, str] | None = None,
                    notes: list[str] | None = None) -> admin_pb2.PublishVersionRequest:
    return admin_pb2.PublishVersionRequest(
        spec=types_pb2.UnitSpec(apartment="shop", unit="web", image="demo:1", port=8080,
                                env=env or {}, command=["serve", "--token=abc"]),
        version="1.2.0", metadata=metadata or {},
        changes=types_pb2.ChangeSet(features=notes or []))


def deploy_request() -> admin_pb2.DeployRequest:
    request = admin_pb2.DeployRequest(apartment="shop", unit="web", version="1.2.0",
                                      building="b1", replicas=3,
                                      strategy=types_pb2.STRATEGY_CANARY)
    request.canary.steps.extend([25, 100])
    return request


@pytest.mark.parametrize(("request_", "expected"), [
    (publish_request(), {"apartment": "shop", "unit": "web", "version": "1.2.0",
                         "image": "demo:1"}),
    (deploy_request(), {"apartment": "shop", "unit": "web", "version": "1.2.0",
                        "building": "b1", "replicas": "3", "strategy": "canary"}),
    (admin_pb2.ControlRolloutRequest(apartment="shop", unit="web",
                                     action=admin_pb2.ROLLOUT_CONTROL_PAUSE),
     {"apartment": "shop", "unit": "web", "action": "pause"}),
    (admin_pb2.RollbackRequest(apartment="shop", unit="web", to_version="1.1.0"),
     {"apartment": "shop", "unit": "web", "to_version": "1.1.0"}),
    (admin_pb2.RunGarbageCollectionRequest(
        host_id="h1", gc_kinds=[types_pb2.GC_KIND_UNUSED, types_pb2.GC_KIND_MEMORY]),
     {"host_id": "h1", "gc_kinds": "unused,memory"}),
    (admin_pb2.RunGarbageCollectionRequest(), {}),
])
def test_essentials_of_each_request_kind(request_: Any, expected: dict[str, str]) -> None:
    assert essentials(request_) == expected


def test_entry_names_caller_method_subject_and_outcome() -> None:
    ok = audit_entry("Deploy", deploy_request(), Caller(PEER), "OK", "")
    assert ok.message == "anonymous Deploy shop/web@1.2.0: OK"
    assert ok.fields["caller"] == "anonymous" and ok.fields["caller_source"] == "peer"
    assert ok.fields["peer"] == PEER and ok.fields["outcome"] == "OK"
    assert ok.fields["unit"] == "web" and ok.fields["strategy"] == "canary"

    refused = audit_entry("Deploy", deploy_request(),
                          Caller(PEER, "admin/alice", verified=True), "NOT_FOUND",
                          "version 1.2.0 of shop/web does not exist")
    assert refused.message == ("admin/alice Deploy shop/web@1.2.0: NOT_FOUND: "
                               "version 1.2.0 of shop/web does not exist")
    assert refused.fields["caller_source"] == "mtls"
    assert refused.fields["outcome"] == "NOT_FOUND"
    assert refused.fields["error"] == "version 1.2.0 of shop/web does not exist"

    claimed = audit_entry("RunGarbageCollection", admin_pb2.RunGarbageCollectionRequest(
        host_id="h2"), Caller(PEER, "viewer/bob"), "PERMISSION_DENIED", "no")
    assert claimed.message.startswith("viewer/bob RunGarbageCollection host h2: ")
    assert claimed.fields["caller_source"] == "claimed"


secret_text = st.text(min_size=1, max_size=12).map(lambda s: f"SECRET-{s}")


@settings(max_examples=60, deadline=None)
@given(env=st.dictionaries(st.from_regex(r"[A-Z_]{1,8}", fullmatch=True), secret_text,
                           max_size=4),
       metadata=st.dictionaries(st.from_regex(r"[a-z]{1,8}", fullmatch=True), secret_text,
                                max_size=3),
       notes=st.lists(secret_text, max_size=3))
def test_no_env_metadata_or_notes_value_reaches_the_event(
        env: dict[str, str], metadata: dict[str, str], notes: list[str]) -> None:
    entry = audit_entry("PublishVersion", publish_request(env, metadata, notes), Caller(PEER),
                        "OK", "")
    recorded = " ".join([entry.message, *entry.fields.keys(), *entry.fields.values()])
    assert "SECRET-" not in recorded
    assert "--token" not in recorded  # the command is not an essential either
    assert entry.fields["version"] == "1.2.0"


# -- the interceptor, over a fake call context -----------------------------------------------


class Sink:
    def __init__(self, fail: bool = False, gate: asyncio.Event | None = None) -> None:
        self.events: list[tuple[str, str, dict[str, str]]] = []
        self.fail = fail
        self.gate = gate

    async def emit(self, type_: str, message: str = "", **fields: str) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise ConnectionError("etcd is gone")
        self.events.append((type_, message, fields))


class Context:
    """What the interceptor reads of a grpc.aio ServicerContext."""

    def __init__(self, remaining: float | None = None) -> None:
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._remaining = remaining

    def time_remaining(self) -> float | None:
        return self._remaining

    def peer(self) -> str:
        return PEER

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str:
        return self._details

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details
        raise grpc.aio.AbortError()


class Details(grpc.HandlerCallDetails):  # type: ignore[misc]
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


async def wrapped(interceptor: AuditInterceptor, name: str, behavior: Any) -> Any:
    async def continuation(details: Any) -> Any:
        return grpc.unary_unary_rpc_method_handler(behavior)

    handler = await interceptor.intercept_service(continuation, Details(path(name)))
    assert handler is not None
    return handler.unary_unary


async def test_records_ok_and_refused_calls_once_each() -> None:
    sink = Sink()
    interceptor = AuditInterceptor(sink)

    async def deploy(request: Any, context: Any) -> admin_pb2.DeployResponse:
        if request.version == "9.9.9":
            await context.abort(grpc.StatusCode.NOT_FOUND, "version 9.9.9 does not exist")
        return admin_pb2.DeployResponse()

    call = await wrapped(interceptor, "Deploy", deploy)
    await call(deploy_request(), Context())
    refused = deploy_request()
    refused.version = "9.9.9"
    with pytest.raises(grpc.aio.AbortError):
        await call(refused, Context())
    await interceptor.drain(1.0)
    assert [(t, f["outcome"], f["version"]) for t, _, f in sink.events] == [
        (EventType.AUDIT, "OK", "1.2.0"), (EventType.AUDIT, "NOT_FOUND", "9.9.9")]
    assert sink.events[1][2]["error"] == "version 9.9.9 does not exist"
    assert interceptor.recorded == 2


async def test_names_the_identity_authz_admitted() -> None:
    sink = Sink()
    interceptor = AuditInterceptor(sink)

    async def rollback(request: Any, context: Any) -> types_pb2.RolloutInfo:
        return types_pb2.RolloutInfo()

    call = await wrapped(interceptor, "Rollback", rollback)
    token = authz_interceptor._CALLER.set(Identity(Role.ADMIN, "alice"))
    try:
        await call(admin_pb2.RollbackRequest(apartment="shop", unit="web"), Context())
    finally:
        authz_interceptor._CALLER.reset(token)
    await interceptor.drain(1.0)
    _, message, fields = sink.events[0]
    assert fields["caller"] == "admin/alice" and fields["caller_source"] == "mtls"
    assert message == "admin/alice Rollback shop/web: OK"


async def test_read_methods_are_not_wrapped() -> None:
    async def behavior(request: Any, context: Any) -> Any:
        return None

    async def continuation(details: Any) -> Any:
        return grpc.unary_unary_rpc_method_handler(behavior)

    handler = await AuditInterceptor(Sink()).intercept_service(continuation,
                                                               Details(path("ListUnits")))
    assert handler is not None and handler.unary_unary is behavior


async def test_an_unexpected_error_is_recorded_as_unknown() -> None:
    sink = Sink()
    interceptor = AuditInterceptor(sink)

    async def broken(request: Any, context: Any) -> Any:
        raise RuntimeError("boom")

    call = await wrapped(interceptor, "RunGarbageCollection", broken)
    with pytest.raises(RuntimeError):
        await call(admin_pb2.RunGarbageCollectionRequest(), Context())
    await interceptor.drain(1.0)
    assert sink.events[0][2]["outcome"] == "UNKNOWN"
    assert "boom" in sink.events[0][2]["error"]


@pytest.mark.parametrize(("remaining", "outcome"), [
    (None, "CANCELLED"), (30.0, "CANCELLED"), (0.01, "DEADLINE_EXCEEDED"),
    (-0.5, "DEADLINE_EXCEEDED")])
async def test_a_call_that_ends_unanswered_is_recorded_as_cancelled_or_past_its_deadline(
        remaining: float | None, outcome: str) -> None:
    sink = Sink()
    interceptor = AuditInterceptor(sink)

    async def deploy(request: Any, context: Any) -> Any:
        raise asyncio.CancelledError()

    call = await wrapped(interceptor, "Deploy", deploy)
    with pytest.raises(asyncio.CancelledError):
        await call(deploy_request(), Context(remaining))
    await interceptor.drain(1.0)
    assert [f["outcome"] for _, _, f in sink.events] == [outcome]


async def test_a_slow_or_failing_write_neither_delays_nor_fails_the_call(
        caplog: pytest.LogCaptureFixture) -> None:
    gate = asyncio.Event()
    sink = Sink(fail=True, gate=gate)
    interceptor = AuditInterceptor(sink)

    async def publish(request: Any, context: Any) -> admin_pb2.PublishVersionResponse:
        return admin_pb2.PublishVersionResponse(already_published=True)

    call = await wrapped(interceptor, "PublishVersion", publish)
    reply = await asyncio.wait_for(call(publish_request(), Context()), 1.0)  # gate still shut
    assert reply.already_published
    with caplog.at_level(logging.WARNING, "coordinator.api.audit_interceptor"):
        gate.set()
        await interceptor.drain(1.0)
    assert "could not record the audit event" in caplog.text and "etcd is gone" in caplog.text
    assert interceptor.recorded == 0


def test_every_audited_method_has_a_shape_the_interceptor_wraps() -> None:
    """The interceptor wraps unary-unary and unary-stream behaviors (SaveSnapshot streams);
    a client-streaming write RPC must fail here until the interceptor learns its shape."""
    for name in AUDITED_METHODS.values():
        method = ADMIN_SERVICE.methods_by_name[name]
        assert not method.client_streaming, name
    assert ADMIN_SERVICE.methods_by_name["SaveSnapshot"].server_streaming
    assert "SaveSnapshot" in AUDITED_METHODS.values()


class SlowFirstSink(Sink):
    """The first write takes longer than the ones after it."""

    async def emit(self, type_: str, message: str = "", **fields: str) -> None:
        if not self.events and fields.get("version") == "1.0.0":
            await asyncio.sleep(0.05)
        await super().emit(type_, message, **fields)


async def test_the_trail_keeps_the_order_in_which_calls_ended() -> None:
    sink = SlowFirstSink()
    interceptor = AuditInterceptor(sink)

    async def deploy(request: Any, context: Any) -> admin_pb2.DeployResponse:
        return admin_pb2.DeployResponse()

    call = await wrapped(interceptor, "Deploy", deploy)
    versions = ["1.0.0", "1.1.0", "1.2.0"]
    for version in versions:
        request = deploy_request()
        request.version = version
        await call(request, Context())
    await interceptor.drain(1.0)
    assert [f["version"] for _, _, f in sink.events] == versions
