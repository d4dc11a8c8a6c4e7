"""The admin calls that take a host out of service: DrainHost, GetDrainStatus and
DecommissionHost (mixed into AdminService), with their protobuf conversions.

The work is done in coordinator/fleet/drains.py and coordinator/fleet/decommission.py; this
module only checks the host id (INVALID_ARGUMENT), converts and answers. GetDrainStatus is a
read any coordinator answers from its cache.
"""

from __future__ import annotations

from typing import Any

from common.errors import InvalidArgument, NotFound
from common.gen.landlord.v1 import admin_pb2
from common.identity import IDENTITY_NAME_PATTERN, IDENTITY_NAME_RULE
from common.proto_values import duration_from_pb, timestamp_to_pb
from coordinator.api.rpc_errors import unary_boundary
from coordinator.fleet.decommission import HostDecommissions
from coordinator.fleet.drain_plan import DrainRecord, DrainView, MovePlan, left_on_host, moving_text
from coordinator.fleet.drains import HostDrains, drain_of
from coordinator.state.cluster_state import ClusterState

__all__ = ["HostRemovalRpcs", "drain_status_to_pb"]

Context = Any


def checked_host_id(host_id: str) -> str:
    host_id = host_id.strip()
    if not host_id:
        raise InvalidArgument("name the host (host_id is empty)", field="host_id")
    if not IDENTITY_NAME_PATTERN.fullmatch(host_id):
        raise InvalidArgument(f"host id {host_id!r} is invalid: {IDENTITY_NAME_RULE}",
                              field="host_id")
    return host_id


def drain_status_to_pb(record: DrainRecord, state: ClusterState) -> admin_pb2.DrainStatus:
    view = DrainView(state.instances_on(record.host_id), set(state.active_rollouts))
    return admin_pb2.DrainStatus(
        host_id=record.host_id, state=record.state.value,
        started_at=timestamp_to_pb(record.started_at),
        deadline_at=timestamp_to_pb(record.deadline_at),
        finished_at=timestamp_to_pb(record.finished_at),
        moving=moving_text(record.moving), moved_count=record.moved_count,
        moved=list(record.moved), message=record.message,
        left=[admin_pb2.InstanceLeft(instance_id=inst.instance_id,
                                     unit=f"{inst.apartment}/{inst.unit}",
                                     version=inst.version, why=why)
              for inst, why in left_on_host(record, view)],
    )


def plan_to_pb(plan: MovePlan) -> list[admin_pb2.PlannedMove]:
    return [admin_pb2.PlannedMove(instance_id=m.instance_id, unit=m.unit, to_host=m.to_host,
                                  why=m.why) for m in plan.moves]


class HostRemovalRpcs:
    state: ClusterState
    drains: HostDrains
    decommissions: HostDecommissions

    @unary_boundary
    async def DrainHost(self, request: admin_pb2.DrainHostRequest, context: Context
                        ) -> admin_pb2.DrainHostResponse:
        host_id = checked_host_id(request.host_id)
        deadline = duration_from_pb(request.deadline) if request.HasField("deadline") else 0.0
        started = await self.drains.start(host_id, deadline)
        return admin_pb2.DrainHostResponse(
            status=drain_status_to_pb(started.record, self.state),
            plan=plan_to_pb(started.plan), started=started.started)

    @unary_boundary
    async def GetDrainStatus(self, request: admin_pb2.GetDrainStatusRequest, context: Context
                             ) -> admin_pb2.DrainStatus:
        host_id = checked_host_id(request.host_id)
        record = drain_of(self.state, host_id)
        if record is None:
            known = host_id in self.state.hosts
            raise NotFound(f"host {host_id!r} " + ("has never been drained" if known else
                           "does not exist (`landlord hosts list` shows the registered "
                           "hosts)"), host=host_id)
        return drain_status_to_pb(record, self.state)

    @unary_boundary
    async def DecommissionHost(self, request: admin_pb2.DecommissionHostRequest,
                               context: Context) -> admin_pb2.DecommissionHostResponse:
        done = await self.decommissions.decommission(checked_host_id(request.host_id))
        return admin_pb2.DecommissionHostResponse(host_id=done.host.host_id,
                                                  building=done.host.building)
