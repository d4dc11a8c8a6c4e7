"""The Admin gRPC service: reads from the cache on any coordinator, writes on the leader.

It only converts and delegates: read models come from coordinator/api/read_models.py (units,
hosts, instances) and the rollout service (rollout status), writes from the registry, the
rollout service and the fleet.

A write on a follower fails FAILED_PRECONDITION with an ``x-leader`` trailer (raised by the
leader fence inside the domain code and mapped in coordinator/api/rpc_errors.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from common.clock import Clock
from common.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from common.gen.landlord.v1 import admin_pb2, admin_pb2_grpc, types_pb2
from common.input_bounds import check_argv
from common.proto_values import duration_from_pb, gc_kinds_from_pb
from common.stream_commands import CollectGarbage, ExecStream, ReadLogs
from coordinator.api.convert_admin import (
    event_to_pb,
    host_to_pb,
    instance_to_pb,
    publish_from_pb,
    resolved_to_pb,
    unit_to_pb,
    version_to_pb,
)
from coordinator.api.host_removal_rpcs import HostRemovalRpcs
from coordinator.api.read_models import ClusterReads
from coordinator.api.rebalance_rpcs import RebalanceRpcs
from coordinator.api.rollout_proto import control_from_pb, deploy_from_pb, rollout_info
from coordinator.api.rpc_errors import stream_boundary, unary_boundary
from coordinator.api.scope import caller_reach, visible_edges
from coordinator.api.unit_changes_proto import (
    unit_change_to_pb,
    unit_of,
)
from coordinator.api.unit_state_rpcs import UnitStateRpcs
from coordinator.fleet.cordons import HostCordons
from coordinator.fleet.decommission import HostDecommissions
from coordinator.fleet.drains import HostDrains
from coordinator.fleet.idle_units import IdleUnits
from coordinator.fleet.known_fleet import KnownFleet
from coordinator.fleet.output_calls import OutputCalls
from coordinator.fleet.rebalances import UnitRebalances
from coordinator.fleet.sessions import Fleet
from coordinator.registry import Registry
from coordinator.rollouts.pause_service import PauseService
from coordinator.rollouts.record import RolloutRecord
from coordinator.rollouts.service import RolloutService
from coordinator.rollouts.unit_service import UnitService
from coordinator.state.cluster_state import ClusterState
from coordinator.state.leadership import Leadership
from coordinator.state.records import EventRecord
from coordinator.state.snapshot import encode as encode_snapshot
from coordinator.state.snapshot_store import ClusterSnapshots

__all__ = ["AdminService"]

Context = Any
OUTPUT_SILENCE = 30.0
"""Seconds a host may send nothing of output it was asked for (logs without follow; an
exec past its own timeout) before the call ends UNAVAILABLE."""
DEFAULT_EXEC_S, MAX_EXEC_S = 30.0, 300.0
"""An exec's timeout when unset, and the longest one (the agent's cap)."""
SNAPSHOT_CHUNK = 1 << 20
"""Bytes of a snapshot per streamed message, far below grpc's message limit."""
class AdminService(HostRemovalRpcs, RebalanceRpcs, UnitStateRpcs,
                   admin_pb2_grpc.AdminServicer):
    def __init__(self, *, state: ClusterState, fleet: Fleet, known: KnownFleet,
                 leadership: Leadership, clock: Clock, registry: Registry,
                 rollouts: RolloutService, cordons: HostCordons, units: UnitService,
                 drains: HostDrains, decommissions: HostDecommissions,
                 snapshots: ClusterSnapshots | None = None,
                 outputs: OutputCalls | None = None,
                 rebalances: UnitRebalances | None = None,
                 pauses: PauseService | None = None,
                 idle: IdleUnits | None = None) -> None:
        self.state = state
        self.idle = idle
        self.units = units
        self.pauses = pauses
        self.snapshots = snapshots
        self.outputs = outputs
        self.cordons = cordons
        self.drains = drains  # DrainHost, GetDrainStatus, DecommissionHost: HostRemovalRpcs
        self.decommissions = decommissions
        self.rebalances = rebalances  # RebalanceUnits, GetRebalanceStatus: RebalanceRpcs
        self.fleet = fleet
        self.leadership = leadership
        self.clock = clock
        self.registry = registry
        self.rollouts = rollouts
        self.reads = ClusterReads(state, fleet, leadership, clock, known.known_state, registry)

    # -- units and versions ----------------------------------------------------------------

    @unary_boundary
    async def PublishVersion(self, request: admin_pb2.PublishVersionRequest, context: Context
                             ) -> admin_pb2.PublishVersionResponse:
        spec, changes, metadata = publish_from_pb(request)
        record, created = await self.registry.publish(spec, changes, metadata)
        return admin_pb2.PublishVersionResponse(version=version_to_pb(record, caller_reach()),
                                                already_published=not created)

    @unary_boundary
    async def ListUnits(self, request: admin_pb2.ListUnitsRequest, context: Context
                        ) -> admin_pb2.ListUnitsResponse:
        return admin_pb2.ListUnitsResponse(
            units=[unit_to_pb(u) for u in self.reads.units(request.apartment)])

    @unary_boundary
    async def GetUnit(self, request: admin_pb2.GetUnitRequest, context: Context
                      ) -> admin_pb2.GetUnitResponse:
        detail = self.reads.unit(request.apartment, request.unit)
        reply = admin_pb2.GetUnitResponse(unit=unit_to_pb(detail.unit),
                                          instances=[instance_to_pb(i) for i in detail.instances])
        if detail.latest is not None:
            reply.latest.CopyFrom(version_to_pb(detail.latest, caller_reach()))
        return reply

    @unary_boundary
    async def ListVersions(self, request: admin_pb2.ListVersionsRequest, context: Context
                           ) -> admin_pb2.ListVersionsResponse:
        found = self.registry.versions(request.apartment, request.unit)
        reach = caller_reach()
        return admin_pb2.ListVersionsResponse(versions=[version_to_pb(v, reach) for v in found])

    @unary_boundary
    async def ResolveDependencies(self, request: admin_pb2.ResolveDependenciesRequest,
                                  context: Context) -> admin_pb2.ResolveDependenciesResponse:
        edges = visible_edges(
            self.registry.resolve(request.apartment, request.unit, request.version),
            caller_reach())
        return admin_pb2.ResolveDependenciesResponse(resolved=[resolved_to_pb(e) for e in edges])

    # -- deployments -----------------------------------------------------------------------

    @unary_boundary
    async def Deploy(self, request: admin_pb2.DeployRequest, context: Context
                     ) -> admin_pb2.DeployResponse:
        record = await self.rollouts.deploy(deploy_from_pb(request))
        if self.idle is not None:  # a deploy brings a collected unit back first
            await self.idle.wake(record.apartment, record.unit, "deploy")
        return admin_pb2.DeployResponse(rollout=self._info(record))

    @unary_boundary
    async def GetRollout(self, request: admin_pb2.GetRolloutRequest, context: Context
                         ) -> types_pb2.RolloutInfo:
        self._require_unit(request.apartment, request.unit)
        return self._info(self.rollouts.get(request.apartment, request.unit,
                                            request.rollout_id))

    @unary_boundary
    async def ListRollouts(self, request: admin_pb2.ListRolloutsRequest, context: Context
                           ) -> admin_pb2.ListRolloutsResponse:
        if request.limit < 0:
            raise InvalidArgument("limit must be >= 0", field="limit")
        self._require_unit(request.apartment, request.unit)
        found = self.rollouts.history(request.apartment, request.unit, request.limit or 10)
        return admin_pb2.ListRolloutsResponse(
            rollouts=[self._info(r) for r in found])

    @unary_boundary
    async def ControlRollout(self, request: admin_pb2.ControlRolloutRequest, context: Context
                             ) -> types_pb2.RolloutInfo:
        self._require_unit(request.apartment, request.unit)
        return self._info(await self.rollouts.control_rollout(
            request.apartment, request.unit, control_from_pb(request.action)))

    @unary_boundary
    async def Rollback(self, request: admin_pb2.RollbackRequest, context: Context
                       ) -> types_pb2.RolloutInfo:
        self._require_unit(request.apartment, request.unit)
        return self._info(await self.rollouts.rollback(
            request.apartment, request.unit, request.to_version))

    @stream_boundary
    async def WatchRollout(self, request: admin_pb2.GetRolloutRequest, context: Context
                           ) -> AsyncIterator[types_pb2.RolloutInfo]:
        self._require_unit(request.apartment, request.unit)
        async for status in self.rollouts.watch(request.apartment, request.unit,
                                                request.rollout_id):
            yield rollout_info(status)

    def _info(self, record: RolloutRecord) -> types_pb2.RolloutInfo:
        """The rollout's status (its read model) in protobuf."""
        return rollout_info(self.rollouts.status(record))

    def _require_unit(self, apartment: str, unit: str) -> None:
        """Names given, and a unit that was published (its rollouts may be none yet)."""
        _require_unit(apartment, unit)
        key = (apartment, unit)
        if not self.state.versions.get(key) and key not in self.state.units:
            raise NotFound(f"unit {apartment}/{unit} does not exist (publish a version first)",
                           unit=unit)

    # -- units: stop, delete, scale (coordinator/rollouts/unit_service.py) ------------------

    @unary_boundary
    async def StopUnit(self, request: admin_pb2.StopUnitRequest, context: Context
                       ) -> admin_pb2.UnitChangeResponse:
        return unit_change_to_pb(await self.units.stop(*unit_of(request)))

    @unary_boundary
    async def DeleteUnit(self, request: admin_pb2.DeleteUnitRequest, context: Context
                         ) -> admin_pb2.UnitChangeResponse:
        return unit_change_to_pb(await self.units.delete(*unit_of(request), caller_reach()))

    @unary_boundary
    async def ScaleUnit(self, request: admin_pb2.ScaleUnitRequest, context: Context
                        ) -> admin_pb2.UnitChangeResponse:
        return unit_change_to_pb(await self.units.scale(*unit_of(request), request.replicas))

    # -- pause and resume (coordinator/rollouts/pause_service.py) --------------------------

    # -- fleet -----------------------------------------------------------------------------

    @unary_boundary
    async def ListHosts(self, request: admin_pb2.ListHostsRequest, context: Context
                        ) -> admin_pb2.ListHostsResponse:
        return admin_pb2.ListHostsResponse(
            hosts=[host_to_pb(h) for h in self.reads.hosts(request.building)])

    @unary_boundary
    async def ListInstances(self, request: admin_pb2.ListInstancesRequest, context: Context
                            ) -> admin_pb2.ListInstancesResponse:
        found = self.reads.instances(request.host_id, request.apartment, request.unit)
        return admin_pb2.ListInstancesResponse(instances=[instance_to_pb(i) for i in found])

    @unary_boundary
    async def RunGarbageCollection(self, request: admin_pb2.RunGarbageCollectionRequest,
                                   context: Context) -> admin_pb2.RunGarbageCollectionResponse:
        self.leadership.fence  # noqa: B018
        kinds = gc_kinds_from_pb(request.gc_kinds)
        if request.host_id:
            if request.host_id not in self.state.hosts:
                raise NotFound(f"host {request.host_id} does not exist", host=request.host_id)
            if request.host_id not in self.fleet.sessions:
                raise Unavailable(f"host {request.host_id} is not connected",
                                  host=request.host_id)
            targets = [request.host_id]
        else:
            targets = sorted(self.fleet.sessions)
        self.fleet.broadcast(targets, CollectGarbage(kinds))
        return admin_pb2.RunGarbageCollectionResponse(hosts=targets)

    @unary_boundary
    async def CordonHost(self, request: admin_pb2.CordonHostRequest, context: Context
                         ) -> admin_pb2.CordonHostResponse:
        result = await self.cordons.cordon(_named(request.host_id, "host"), request.reason)
        return admin_pb2.CordonHostResponse(
            host=host_to_pb(self.reads.host(result.host.host_id)), changed=result.changed)

    @unary_boundary
    async def UncordonHost(self, request: admin_pb2.UncordonHostRequest, context: Context
                           ) -> admin_pb2.CordonHostResponse:
        result = await self.cordons.uncordon(_named(request.host_id, "host"))
        return admin_pb2.CordonHostResponse(
            host=host_to_pb(self.reads.host(result.host.host_id)), changed=result.changed)

    # -- events and cluster ----------------------------------------------------------------

    @stream_boundary
    async def StreamEvents(self, request: admin_pb2.StreamEventsRequest, context: Context
                           ) -> AsyncIterator[types_pb2.Event]:
        if request.after_sequence < 0:
            raise InvalidArgument("after_sequence must be >= 0", field="after_sequence")
        history = duration_from_pb(request.history)
        cutoff = self.clock.now() - history if history > 0 else 0.0

        def wanted(e: EventRecord) -> bool:
            return ((not request.apartment or e.apartment == request.apartment)
                    and (not request.unit or e.unit == request.unit))

        queue = self.state.subscribe_events() if request.follow else None
        try:
            last = request.after_sequence
            for event in self.state.event_history():
                if event.sequence > last and event.time >= cutoff and wanted(event):
                    yield event_to_pb(event)
                last = max(last, event.sequence)
            while queue is not None:
                try:
                    event = await asyncio.wait_for(queue.get(), 1.0)
                except TimeoutError:
                    if not self.state.is_subscribed(queue):
                        raise Unavailable("this event stream fell too far behind; "
                                          "reconnect with after_sequence") from None
                    continue
                if event.sequence > last and wanted(event):
                    yield event_to_pb(event)
                last = max(last, event.sequence)
        finally:
            if queue is not None:
                self.state.unsubscribe_events(queue)

    @unary_boundary
    async def GetLeader(self, request: admin_pb2.GetLeaderRequest, context: Context
                        ) -> admin_pb2.GetLeaderResponse:
        leadership = self.leadership
        leader = leadership.leader
        return admin_pb2.GetLeaderResponse(
            leader_id=leader.id if leader else "", leader_address=leader.address if leader else "",
            this_is_leader=leadership.is_leader,
        )

    @stream_boundary
    async def InstanceLogs(self, request: admin_pb2.InstanceLogsRequest, context: Context
                           ) -> AsyncIterator[admin_pb2.InstanceOutput]:
        since = duration_from_pb(request.since)
        command = ReadLogs(_named(request.instance_id, "instance"), request.follow,
                           self.clock.now() - since if since > 0 else 0.0,
                           _count(request.tail, "tail"))
        async for item in self._output(command, 0.0 if request.follow else OUTPUT_SILENCE):
            yield item

    @stream_boundary
    async def ExecInstance(self, request: admin_pb2.ExecInstanceRequest, context: Context
                           ) -> AsyncIterator[admin_pb2.InstanceOutput]:
        argv = tuple(request.argv)
        check_argv("argv", argv)
        if not argv or not argv[0]:
            raise InvalidArgument("name the command to run (argv is empty)", field="argv")
        timeout = duration_from_pb(request.timeout)
        if not 0 <= timeout <= MAX_EXEC_S:
            raise InvalidArgument(f"timeout must be 0 to {MAX_EXEC_S:g}s", field="timeout")
        command = ExecStream(_named(request.instance_id, "instance"), argv, timeout)
        async for item in self._output(command, (timeout or DEFAULT_EXEC_S) + OUTPUT_SILENCE):
            yield item

    async def _output(self, command: ReadLogs | ExecStream, wait_s: float
                      ) -> AsyncIterator[admin_pb2.InstanceOutput]:
        self.leadership.fence  # noqa: B018  (agents stream to the leader: NotLeader names it)
        if self.outputs is None:
            raise Unavailable("this coordinator streams no instance output")
        async for chunk in self.outputs.stream(command.instance_id, command, wait_s):
            if chunk.end and chunk.error:
                raise FailedPrecondition(f"output of {command.instance_id}: {chunk.error}",
                                         instance=command.instance_id)
            yield admin_pb2.InstanceOutput(data=chunk.data, stderr=chunk.stderr,
                                           end=chunk.end, exit_code=chunk.exit_code)

    @stream_boundary
    async def SaveSnapshot(self, request: admin_pb2.SaveSnapshotRequest, context: Context
                           ) -> AsyncIterator[admin_pb2.SnapshotChunk]:
        if self.snapshots is None:
            raise Unavailable("this coordinator takes no snapshots")
        data = encode_snapshot(await self.snapshots.take(self.clock.now()))
        for start in range(0, len(data), SNAPSHOT_CHUNK):
            yield admin_pb2.SnapshotChunk(data=data[start:start + SNAPSHOT_CHUNK])


def _require_unit(apartment: str, unit: str) -> None:
    if not apartment or not unit:
        raise InvalidArgument("apartment and unit are required", field="unit")


def _named(value: str, what: str) -> str:
    """A required id field, stripped; ``what`` is the thing it names (``instance``)."""
    if not value.strip():
        raise InvalidArgument(f"name the {what} ({what}_id is empty)", field=f"{what}_id")
    return value.strip()


def _count(value: int, name: str) -> int:
    if value < 0:
        raise InvalidArgument(f"{name} must not be negative", field=name)
    return value
