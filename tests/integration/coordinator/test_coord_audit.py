"""The audit trail of a real in-process coordinator on a real etcd: publish, deploy and a
refused deploy each leave one audit event naming the caller, the unit, the version and the
outcome, and `landlord events --type audit` prints them; an agent cannot forge one."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import grpc
import pytest
from typer.testing import CliRunner

from common.event_types import EventType
from common.gen.landlord.v1 import admin_pb2, agent_pb2, agent_pb2_grpc, types_pb2
from common.resources import Resources
from common.stream_convert import registration_to_pb, report_to_pb
from common.stream_messages import AgentReport, Registration, ReportedEvent
from coordinator.app import Coordinator
from coordinator.cli.main import app
from coordinator.state.records import EventRecord
from tests.integration.coordinator.agents import start_agent
from tests.support import async_eventually

SECRET = "hunter2-do-not-log"


def publish_request() -> admin_pb2.PublishVersionRequest:
    return admin_pb2.PublishVersionRequest(
        spec=types_pb2.UnitSpec(
            apartment="shop", unit="web", image="demo:1", service_port=9000,
            env={"DB_PASSWORD": SECRET},
            resources=types_pb2.Resources(cpu_millis=100, memory_bytes=64 << 20)),
        version="1.0.0", metadata={"token": SECRET},
        changes=types_pb2.ChangeSet(features=["first"]))


def audit_events(coordinator: Coordinator) -> list[EventRecord]:
    return [e for e in coordinator.state.event_history() if e.type == EventType.AUDIT]


async def landlord(coordinator: Coordinator, *args: str) -> str:
    """The CLI in a thread (it runs its own event loop), pointed at this coordinator."""
    result = await asyncio.to_thread(
        CliRunner().invoke, app, ["--coordinator", coordinator.config.listen, *args])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


async def test_publish_deploy_and_a_refused_deploy_are_audited(
        coordinator: Coordinator, admin: Any) -> None:
    agent = start_agent([coordinator.config.listen], "h1", "127.0.0.2")
    try:
        await async_eventually(
            lambda: _has_host(admin), timeout=10, message="h1 registered")
        await admin.PublishVersion(publish_request())
        await admin.Deploy(admin_pb2.DeployRequest(
            apartment="shop", unit="web", version="1.0.0", replicas=1))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await admin.Deploy(admin_pb2.DeployRequest(
                apartment="shop", unit="web", version="9.9.9", replicas=1))
        code = refused.value.code().name

        async def three() -> list[EventRecord]:
            found = audit_events(coordinator)
            return found if len(found) >= 3 else []

        published, deployed, denied = await async_eventually(three, timeout=10)
        assert len(audit_events(coordinator)) == 3  # once per call
        for event in (published, deployed, denied):
            assert event.details["caller"] == "anonymous"
            assert event.details["caller_source"] == "peer"
            assert event.details["peer"].startswith("ipv4:127.0.0.1:")
            assert (event.apartment, event.unit) == ("shop", "web")
        assert (published.details["method"], published.version,
                published.details["outcome"]) == ("PublishVersion", "1.0.0", "OK")
        assert published.details["image"] == "demo:1"
        assert (deployed.details["method"], deployed.version,
                deployed.details["outcome"]) == ("Deploy", "1.0.0", "OK")
        assert deployed.details["replicas"] == "1"
        assert (denied.details["method"], denied.version,
                denied.details["outcome"]) == ("Deploy", "9.9.9", code)
        assert denied.details["error"] == refused.value.details()
        assert not any(SECRET in str(e) for e in coordinator.state.event_history())

        table = await landlord(coordinator, "events", "--type", "audit")
        lines = table.strip().splitlines()
        assert len(lines) == 3, table
        assert "anonymous  PublishVersion  shop/web@1.0.0  OK" in lines[0]
        assert "anonymous  Deploy  shop/web@1.0.0  OK" in lines[1]
        assert f"anonymous  Deploy  shop/web@9.9.9  {code} (" in lines[2]
        assert SECRET not in table
        everything = await landlord(coordinator, "events")
        assert "rollout.started" in everything  # the filter left these out above
        as_json = await landlord(coordinator, "-o", "json", "events", "--type", "audit")
        rows = [json.loads(line) for line in as_json.splitlines()]
        assert [r["details"]["outcome"] for r in rows] == ["OK", "OK", code]
    finally:
        await agent.stop()


async def _has_host(admin: Any) -> bool:
    return bool((await admin.ListHosts(admin_pb2.ListHostsRequest())).hosts)


async def test_an_agent_cannot_forge_an_audit_event(coordinator: Coordinator) -> None:
    now = time.time()
    registration = Registration("h9", "default", "127.0.0.9", Resources(cpu=1, memory=1 << 30),
                                {}, ("cpu", "memory"), "test")
    report = AgentReport(sequence=1, time=now, events=(
        ReportedEvent(str(EventType.AUDIT), now, "admin/alice Deploy shop/web@6.6.6: OK",
                      details={"caller": "admin/alice", "method": "Deploy"}),
        ReportedEvent(str(EventType.LIMIT_EXCEEDED), now, "marker"),
    ))
    async with grpc.aio.insecure_channel(coordinator.config.listen) as channel:
        call = agent_pb2_grpc.AgentStreamStub(channel).Session()
        await call.write(agent_pb2.AgentMessage(register=registration_to_pb(registration)))
        await call.read()
        await call.write(agent_pb2.AgentMessage(report=report_to_pb(report, "h9")))

        async def marker_recorded() -> bool:
            return any(e.message == "marker" for e in coordinator.state.event_history())

        await async_eventually(marker_recorded, timeout=10)
        call.cancel()
    assert audit_events(coordinator) == []
