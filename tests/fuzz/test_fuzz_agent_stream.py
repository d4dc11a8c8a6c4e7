"""Hostile agent streams: a host identity (its own certificate, landlord://host/fz-rogue)
opens AgentStream sessions and sends generated messages: registrations as itself or as the
honest host, reports with statuses, removals, events and windows about instances it does not
own, garbage in every field. No INTERNAL or UNKNOWN, no crash, and nothing of the honest
host changes in etcd (its host record, allocation, instances, statuses, the units' routes
and rollouts; no event about it or its instances)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any, cast

import grpc
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from local_cluster.pki import admin_channel

from common.gen.landlord.v1 import agent_pb2, types_pb2
from common.schema import STREAM_SCHEMA
from tests.e2e.cluster import Cluster
from tests.fuzz.conftest import CI_STREAM_EXAMPLES, HOST, ROGUE, baseline, examples
from tests.fuzz.harness import BAD_CODES, AdminTarget, Tally, describe
from tests.fuzz.messages import Hints, message_strategy, methods_of

SESSION = methods_of(agent_pb2.DESCRIPTOR.services_by_name["AgentStream"])[0]
STREAM_SECONDS = 1.5
"""How long one hostile session may last (it is ended by the deadline if not refused)."""
SETTLE_SECONDS = 2.5
"""Longer than two of the honest agent's report intervals and a status flush."""


def registration(hints: Hints) -> st.SearchStrategy[agent_pb2.AgentMessage]:
    """A generated Register as the rogue (mostly) or as the honest host, schema mostly right."""
    def fix(register: agent_pb2.Register, host: str, schema: int) -> agent_pb2.AgentMessage:
        register.host_id, register.schema = host, schema
        return agent_pb2.AgentMessage(register=register)

    def valid(instances: list[Any], images: list[str]) -> agent_pb2.AgentMessage:
        """A registration the coordinator takes, claiming generated instances (the honest
        host's among them) as the rogue's full state."""
        return agent_pb2.AgentMessage(register=agent_pb2.Register(
            host_id=ROGUE, building="default", address="127.0.0.9", agent_version="fuzz",
            capacity=types_pb2.Resources(cpu_millis=1000, memory_bytes=1 << 30),
            enforceable=["cpu", "memory"], schema=STREAM_SCHEMA, instances=instances,
            images=images))

    status = message_strategy(types_pb2.InstanceStatus.DESCRIPTOR, hints)
    return st.one_of(
        st.builds(fix, message_strategy(agent_pb2.Register.DESCRIPTOR, hints),
                  st.sampled_from((ROGUE, ROGUE, ROGUE, HOST)),
                  st.sampled_from((STREAM_SCHEMA, STREAM_SCHEMA, 1, 0, 99))),
        st.builds(valid, st.lists(status, max_size=3), st.lists(st.sampled_from(hints.images))),
        st.builds(valid, st.just([]), st.just([])))


def sessions(hints: Hints) -> st.SearchStrategy[list[agent_pb2.AgentMessage]]:
    any_message = message_strategy(agent_pb2.AgentMessage.DESCRIPTOR, hints)
    report = message_strategy(agent_pb2.StatusReport.DESCRIPTOR, hints).map(
        lambda r: agent_pb2.AgentMessage(report=cast(agent_pb2.StatusReport, r)))
    first = st.one_of(registration(hints), registration(hints), registration(hints),
                      any_message)
    rest = st.lists(st.one_of(report, report, any_message), max_size=5)
    return st.builds(lambda a, b: [a, *b], first, rest)


def honest_state(cluster: Cluster, instances: set[str]) -> tuple[dict[str, str], list[str]]:
    """Every key but the rogue's own and the events; and the events naming the honest host
    or its instances."""
    state = {k: v for k, v in cluster.etcd.dump(cluster.prefix + "/").items()
             if not k.endswith("/" + ROGUE) and "/events/" not in k}
    about = []
    for key, value in cluster.etcd.dump(cluster.prefix + "/events/").items():
        event = json.loads(value)
        if event.get("host_id") == HOST or event.get("instance_id") in instances:
            about.append(key)
    return state, about


def settled_honest_state(cluster: Cluster, instances: set[str]) -> tuple[dict[str, str], list[str]]:
    """The honest host's state once its last writes have landed: seeding ends when no
    rollout is active, but the status the agent reported last may still be on its way
    to etcd (status writes are batched), so two reads a few report intervals apart must
    agree before the sessions begin."""
    state = honest_state(cluster, instances)
    for _ in range(20):
        time.sleep(SETTLE_SECONDS)
        again = honest_state(cluster, instances)
        if again == state:
            return state
        state = again
    raise AssertionError("the honest host's records kept changing before any hostile session")


def test_hostile_agent_streams(fuzz_cluster: tuple[Cluster, Hints],
                               capsys: pytest.CaptureFixture[str]) -> None:
    cluster, hints = fuzz_cluster
    assert cluster.pki is not None
    tally = Tally()
    health = AdminTarget(cluster, tally, baseline())
    channel = admin_channel(cluster.coordinator.address, cluster.pki.agent(ROGUE))
    session = channel.stream_stream(
        SESSION.path, request_serializer=agent_pb2.AgentMessage.SerializeToString,
        response_deserializer=agent_pb2.CoordinatorMessage.FromString)
    registered = 0
    instances = set(hints.extra["instance_id"])
    before = settled_honest_state(cluster, instances)

    def send(messages: list[agent_pb2.AgentMessage]) -> Iterator[agent_pb2.AgentMessage]:
        yield from messages
        time.sleep(0.2)  # let the reports be taken before the stream half-closes

    @settings(max_examples=examples("FUZZ_STREAM_EXAMPLES", CI_STREAM_EXAMPLES), deadline=None,
              database=None, phases=(Phase.generate,),
              suppress_health_check=list(HealthCheck))
    @given(sessions(hints))
    def one_session(messages: list[Any]) -> None:
        nonlocal registered
        what = describe("Session", agent_pb2.AgentMessage(), 0) + " " + " | ".join(
            describe(m.WhichOneof("body") or "empty", m, 120) for m in messages)
        code = grpc.StatusCode.OK
        try:
            for answer in session(send(messages), timeout=STREAM_SECONDS):
                if answer.HasField("registered"):
                    registered += 1
        except grpc.RpcError as error:
            code = error.code()
            details = error.details() or ""
            if code in BAD_CODES:
                tally.bad.append(f"{code.name} {details!r} for {what}")
            if os.environ.get("FUZZ_VERBOSE"):
                print(code.name, details[:150])
        tally.sent += 1
        tally.codes[code.name] += 1
        health.check_alive(what)
        tally.refusals_checked += 1  # every session, taken or refused, is checked
        after = honest_state(cluster, instances)
        if after != before:
            changed = sorted(k for k in {*after[0], *before[0]}
                             if after[0].get(k) != before[0].get(k))
            values = [(before[0].get(k), after[0].get(k)) for k in changed[:2]]
            tally.dirty_refusals.append(f"honest host's records changed ({changed[:5]}: "
                                        f"{values}, "
                                        f"events {after[1][len(before[1]):][:3]}) by {what}")
        assert not tally.problems(), tally.problems()

    try:
        one_session()
    finally:
        channel.close()
        health.close()
        with capsys.disabled():
            print("\n" + tally.summary("fuzz: hostile agent streams")
                  + f"\nsessions registered (reports then taken): {registered}")
    assert not tally.problems(), tally.summary("problems")
    assert registered, "no hostile session got past registration: the reports were not fuzzed"
