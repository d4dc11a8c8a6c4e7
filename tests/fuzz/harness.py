"""Sends generated requests to a live coordinator and checks what each did.

Per request: the status code (never INTERNAL or UNKNOWN), the coordinator process alive and
its health service SERVING, and for a refused request (any code but OK) etcd unchanged.

"etcd unchanged" compares the whole cluster prefix before and after the call, except for
exactly what a refusal is expected to write: the call's own audit event (one key under
``{prefix}/events/`` of type ``audit`` naming the method and the refusal's code, written by
coordinator/api/audit_interceptor.py for every method ``AUDITED_METHODS`` lists), and
instance statuses put under ``{prefix}/status/`` (the status writer mirrors the agents'
reports there at any time; no admin call puts one). It is
done with etcd revisions rather than two full dumps, so a run of 10,000 requests does not
read 10,000 audit events per call: the keys written after the revision read before the call
must be that one audit event, and the number of keys must have grown by exactly as many
(a delete would lower it).

After an accepted write the cluster is let settle (rollouts it started end or are aborted)
before the next request, so what a later refusal is checked against is only its own doing.
Then what the write changed that would block the requests after it is put back
(``Baseline``): a cordon or drain is lifted, a stopped or deleted seeded unit is deployed
again (republished first), a unit scaled up is scaled back to one instance. Without this,
one accepted CordonHost made every later Deploy a refusal for lack of room before any of
its own checks ran. The repairs are the harness's own calls (not counted), made and settled
before the next request reads its "before" revision, so no check is weakened.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2
from local_cluster.pki import admin_channel

from common.gen.landlord.v1 import admin_pb2, admin_pb2_grpc, types_pb2
from coordinator.api.audit import AUDITED_METHODS
from tests.e2e.cluster import Cluster
from tests.fuzz.messages import RpcMethod

__all__ = ["BAD_CODES", "AdminTarget", "Baseline", "Tally", "past_validation"]

BAD_CODES = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN})
UNARY_TIMEOUT = 15.0
STREAM_TIMEOUT = 0.3
"""A server stream is read for this long (or 5 messages): long enough to see it refused."""
STREAM_MESSAGES = 5
AUDIT_WAIT = 2.0
SETTLE_WAIT = 15.0
ROLLOUT_GRACE = 0.5
"""How long an accepted rollout may run by itself before the harness aborts it."""
PLACEMENT_REFUSALS = ("already has an active rollout", "is held by rollout", "host to place")
"""FAILED_PRECONDITION texts of a Deploy refused by placement or the one-active-rollout rule
(coordinator/fleet/placement.py, coordinator/rollouts/one_active.py), i.e. after validation."""


def past_validation(code: grpc.StatusCode, details: str) -> bool:
    """Whether a Deploy that got ``code`` was decided by placement or the one-active-rollout
    rule (accepted, or refused for room or for a rollout already running)."""
    if code in (grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED):
        return True
    return code == grpc.StatusCode.FAILED_PRECONDITION and any(
        text in details for text in PLACEMENT_REFUSALS)


@dataclass(frozen=True)
class Baseline:
    """What the harness puts back after every accepted write."""

    hosts: tuple[str, ...]
    """Kept uncordoned (an uncordon also stops the host's drain)."""
    units: dict[tuple[str, str], str]
    """(apartment, unit) -> the version deployed again when the unit is stopped or gone."""
    publishes: tuple[admin_pb2.PublishVersionRequest, ...] = ()
    """Published again (those of its unit) before a deleted unit is deployed again."""


@dataclass
class Tally:
    """What a fuzz run saw; ``summary()`` is what `make fuzz` prints."""

    sent: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    by_method: dict[str, Counter[str]] = field(default_factory=dict)
    bad: list[str] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)
    dirty_refusals: list[str] = field(default_factory=list)
    refusals_checked: int = 0
    stalls: list[str] = field(default_factory=list)
    deploys_past_validation: int = 0
    deploy_refusals: Counter[str] = field(default_factory=Counter)
    """Why Deploys were refused: code and the first words of the message."""
    repairs: Counter[str] = field(default_factory=Counter)

    def problems(self) -> list[str]:
        return [*self.bad, *self.crashes, *self.dirty_refusals, *self.stalls]

    def summary(self, title: str) -> str:
        codes = ", ".join(f"{code} {n}" for code, n in self.codes.most_common())
        lines = [
            f"== {title}",
            f"requests sent: {self.sent}",
            f"codes seen: {codes}",
            f"INTERNAL/UNKNOWN: {len(self.bad)}",
            f"crashes (process gone or health not SERVING): {len(self.crashes)}",
            f"refusals checked against etcd: {self.refusals_checked}; "
            f"that changed it: {len(self.dirty_refusals)}",
            f"unary calls past {UNARY_TIMEOUT:.0f} s: {len(self.stalls)}",
            f"Deploys past validation (OK, or refused by placement or the one-active-rollout "
            f"rule): {self.deploys_past_validation} of "
            f"{sum(self.by_method.get('Deploy', Counter()).values())}",
            "  most common Deploy refusals: " + "; ".join(
                f"{n}x {why}" for why, n in self.deploy_refusals.most_common(4)),
            "state put back after accepted writes: "
            + (", ".join(f"{what} {n}" for what, n in self.repairs.most_common()) or "none"),
        ]
        for method in sorted(self.by_method):
            seen = self.by_method[method]
            lines.append(f"  {method}: " + ", ".join(f"{c} {n}" for c, n in seen.most_common()))
        lines += [f"  ! {p}" for p in self.problems()[:20]]
        return "\n".join(lines)


def describe(method: str, request: Message, limit: int = 300) -> str:
    text = repr(str(request))
    return f"{method}({text[:limit]}{'...' if len(text) > limit else ''})"


class AdminTarget:
    """A running fuzz cluster's leader, called method by method from descriptors."""

    def __init__(self, cluster: Cluster, tally: Tally, baseline: Baseline) -> None:
        self.cluster = cluster
        self.tally = tally
        self.baseline = baseline
        self.coordinator = cluster.coordinator
        self.channel = admin_channel(self.coordinator.address, cluster.client_tls)
        self.root = cluster.prefix + "/"
        self.events = cluster.prefix + "/events/"
        self.statuses = cluster.prefix + "/status/"
        self._health = self.channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString)

    def close(self) -> None:
        self.channel.close()

    def admin(self) -> Any:
        return admin_pb2_grpc.AdminStub(self.channel)

    def call(self, method: RpcMethod, request: Message) -> grpc.StatusCode:
        """Send one request and check everything; the code it got."""
        count, revision = self.cluster.etcd.count(self.root)
        code, details = self._send(method, request)
        self.tally.sent += 1
        self.tally.codes[code.name] += 1
        self.tally.by_method.setdefault(method.name, Counter())[code.name] += 1
        what = describe(method.name, request)
        if code in BAD_CODES:
            self.tally.bad.append(f"{code.name} {details[:200]!r} for {what}")
        if method.name == "Deploy":
            if past_validation(code, details):
                self.tally.deploys_past_validation += 1
            if code != grpc.StatusCode.OK:
                self.tally.deploy_refusals[f"{code.name} {_digits_out(details[:48])}"] += 1
        if code == grpc.StatusCode.DEADLINE_EXCEEDED and not method.server_streaming:
            self.tally.stalls.append(f"no answer in {UNARY_TIMEOUT} s for {what}")
        self.check_alive(what)
        audited = method.path in AUDITED_METHODS
        if code == grpc.StatusCode.OK and (audited or not method.server_streaming):
            if audited:
                self.settle()
                self.restore()
            return code
        self.tally.refusals_checked += 1
        problem = self._unchanged_but_audit(method, code, count, revision)
        if problem:
            self.tally.dirty_refusals.append(f"{problem} after {code.name} for {what}")
        return code

    def _send(self, method: RpcMethod, request: Message) -> tuple[grpc.StatusCode, str]:
        payload = request.SerializeToString()
        try:
            if not method.server_streaming:
                self.channel.unary_unary(method.path)(payload, timeout=UNARY_TIMEOUT)
                return grpc.StatusCode.OK, ""
            stream = self.channel.unary_stream(method.path)(payload, timeout=STREAM_TIMEOUT)
            for seen, _ in enumerate(stream, 1):
                if seen >= STREAM_MESSAGES:
                    stream.cancel()
                    break
            return grpc.StatusCode.OK, ""
        except grpc.RpcError as error:
            code = error.code()
            if method.server_streaming and code == grpc.StatusCode.CANCELLED:
                return grpc.StatusCode.OK, ""  # our own cancel after enough messages
            return code, error.details() or ""

    def check_alive(self, what: str) -> None:
        if not self.coordinator.running:
            self.tally.crashes.append(f"coordinator exited after {what}")
            raise AssertionError(self.tally.crashes[-1] + "\n" + self.coordinator.log_tail())
        try:
            status = self._health(health_pb2.HealthCheckRequest(), timeout=5).status
        except grpc.RpcError as error:
            status = None
            detail = f"{error.code()}"
        else:
            detail = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
        if status != health_pb2.HealthCheckResponse.SERVING:
            self.tally.crashes.append(f"health {detail} after {what}")
            raise AssertionError(self.tally.crashes[-1] + "\n" + self.coordinator.log_tail())

    def _unchanged_but_audit(self, method: RpcMethod, code: grpc.StatusCode, count: int,
                             revision: int) -> str:
        """'' when etcd holds what it held at ``revision`` plus at most this call's audit
        event; else what differs."""
        audited = method.path in AUDITED_METHODS
        deadline = time.monotonic() + (AUDIT_WAIT if audited else 0.0)
        while True:
            changed = self.cluster.etcd.changed_since(self.root, revision)
            expected = {k for k, (created, value) in changed.items()
                        if created > revision and k.startswith(self.events)
                        and _is_audit_of(value, method.name, code)}
            if expected or time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        if len(expected) > 1:
            return f"{len(expected)} audit events"
        # instance statuses mirror the agents' reports: only the status writer puts them,
        # whenever a report changes one (an instance that became healthy a moment after
        # the settle), never an admin call
        reported = {k for k in changed if k.startswith(self.statuses)}
        others = sorted(set(changed) - expected - reported)
        if others:
            return "written: " + ", ".join(
                f"{k}={changed[k][1][:160]!r}" for k in others[:5])
        created = sum(1 for k in reported if changed[k][0] > revision)
        after, _ = self.cluster.etcd.count(self.root)
        if after != count + len(expected) + created:
            return f"{count + len(expected) + created - after} key(s) deleted"
        return ""

    def restore(self) -> None:
        """Put back what an accepted write changed that blocks later requests (``Baseline``);
        each repair counted in the tally, the cluster settled after any."""
        admin = self.admin()
        repaired = False
        hosts = admin.ListHosts(admin_pb2.ListHostsRequest(), timeout=UNARY_TIMEOUT).hosts
        for host in hosts:
            if host.host_id in self.baseline.hosts and host.cordoned:
                admin.UncordonHost(admin_pb2.UncordonHostRequest(host_id=host.host_id),
                                   timeout=UNARY_TIMEOUT)
                repaired = self._repaired("uncordon")
        for (apartment, unit), version in self.baseline.units.items():
            info = self._unit(apartment, unit)
            if info is None:
                for publish in self.baseline.publishes:
                    if (publish.spec.apartment, publish.spec.unit) == (apartment, unit):
                        admin.PublishVersion(publish, timeout=UNARY_TIMEOUT)
                self._repaired("republish")
            if info is None or not info.stable_version:
                admin.Deploy(admin_pb2.DeployRequest(
                    apartment=apartment, unit=unit, version=version, replicas=1),
                    timeout=UNARY_TIMEOUT)
                self.settle(grace=SETTLE_WAIT)  # the repair must finish: never aborted
                repaired = self._repaired("redeploy")
            elif info.instances > 1:
                admin.ScaleUnit(admin_pb2.ScaleUnitRequest(apartment=apartment, unit=unit,
                                                           replicas=1), timeout=UNARY_TIMEOUT)
                repaired = self._repaired("scale to 1")
        if repaired:
            self.settle()

    def _repaired(self, what: str) -> bool:
        self.tally.repairs[what] += 1
        return True

    def _unit(self, apartment: str, unit: str) -> types_pb2.UnitInfo | None:
        try:
            found: types_pb2.UnitInfo = self.admin().GetUnit(
                admin_pb2.GetUnitRequest(apartment=apartment, unit=unit),
                timeout=UNARY_TIMEOUT).unit
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return found

    def settle(self, grace: float = ROLLOUT_GRACE) -> None:
        """After an accepted write: wait until no rollout is active (aborting the ones that
        do not end by themselves within ``grace``) and etcd has been quiet for a moment."""
        active = self.cluster.prefix + "/active-rollout/"
        start = time.monotonic()
        deadline = start + SETTLE_WAIT
        aborted: set[str] = set()
        while time.monotonic() < deadline:
            running = self.cluster.etcd.dump(active)
            if not running:
                break
            if time.monotonic() - start > grace:
                for key in set(running) - aborted:
                    apartment, unit = key[len(active):].split("/", 1)
                    aborted.add(key)
                    # it may have ended meanwhile (refused then); the loop looks again
                    with contextlib.suppress(grpc.RpcError):
                        self.admin().ControlRollout(admin_pb2.ControlRolloutRequest(
                            apartment=apartment, unit=unit,
                            action=admin_pb2.ROLLOUT_CONTROL_ABORT), timeout=5)
            time.sleep(0.05)
        _, revision = self.cluster.etcd.count(self.root)
        quiet_since = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - quiet_since < 0.3:
            time.sleep(0.05)
            _, now = self.cluster.etcd.count(self.root)
            if now != revision:
                revision, quiet_since = now, time.monotonic()


def _digits_out(text: str) -> str:
    """``text`` with numbers as ``N``, so refusals that differ only in a value group."""
    return re.sub(r"-?[0-9][0-9.e+]*", "N", text)


def _is_audit_of(value: str, method: str, code: grpc.StatusCode) -> bool:
    try:
        event = json.loads(value)
    except ValueError:
        return False
    details = event.get("details") or {}
    outcomes = {code.name}
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        # the server sees a client that gave up at its deadline as gone: it may not tell
        outcomes.add(grpc.StatusCode.CANCELLED.name)
    return bool(event.get("type") == "audit" and details.get("method") == method
                and details.get("outcome") in outcomes)
