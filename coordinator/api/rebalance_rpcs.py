"""The admin calls that even out units' spread: RebalanceUnits and GetRebalanceStatus (mixed
into AdminService), with their protobuf conversions.

The work is done in coordinator/fleet/rebalances.py; this module checks the names
(INVALID_ARGUMENT), converts and answers. GetRebalanceStatus is a read any coordinator
answers from its cache.
"""

from __future__ import annotations

from typing import Any

from common.dependencies import NAME_PATTERN, NAME_RULE
from common.errors import InvalidArgument, NotFound, Unavailable
from common.gen.landlord.v1 import admin_pb2
from common.proto_values import timestamp_to_pb
from coordinator.api.rpc_errors import unary_boundary
from coordinator.api.unit_changes_proto import unit_of
from coordinator.fleet.instance_move import moving_text
from coordinator.fleet.rebalance_plan import RebalanceRecord
from coordinator.fleet.rebalances import RebalanceStart, UnitRebalances, rebalance_of
from coordinator.state.cluster_state import ClusterState

__all__ = ["RebalanceRpcs", "rebalance_status_to_pb"]

Context = Any


def rebalance_status_to_pb(record: RebalanceRecord) -> admin_pb2.RebalanceStatus:
    return admin_pb2.RebalanceStatus(
        apartment=record.apartment, unit=record.unit, state=record.state.value,
        reason=record.reason, started_at=timestamp_to_pb(record.started_at),
        finished_at=timestamp_to_pb(record.finished_at), moving=moving_text(record.moving),
        moved_count=record.moved_count, moved=list(record.moved), message=record.message)


def started_to_pb(start: RebalanceStart) -> admin_pb2.RebalanceStarted:
    return admin_pb2.RebalanceStarted(
        status=rebalance_status_to_pb(start.record), started=start.started,
        plan=[admin_pb2.RebalanceMove(instance_id=m.instance.instance_id,
                                      unit=f"{m.instance.apartment}/{m.instance.unit}",
                                      from_host=m.instance.host_id, to_host=m.to_host)
              for m in start.plan])


class RebalanceRpcs:
    state: ClusterState
    rebalances: UnitRebalances | None

    def _rebalancer(self) -> UnitRebalances:
        if self.rebalances is None:
            raise Unavailable("this coordinator does not rebalance units")
        return self.rebalances

    @unary_boundary
    async def RebalanceUnits(self, request: admin_pb2.RebalanceUnitsRequest, context: Context
                             ) -> admin_pb2.RebalanceUnitsResponse:
        rebalances = self._rebalancer()
        if request.unit:
            started = [await rebalances.start(*unit_of(request))]
        else:
            if request.apartment and not NAME_PATTERN.fullmatch(request.apartment):
                raise InvalidArgument(f"apartment {request.apartment!r} is invalid: "
                                      f"{NAME_RULE}", field="apartment")
            started = await rebalances.start_all(request.apartment)
        return admin_pb2.RebalanceUnitsResponse(rebalances=[started_to_pb(s) for s in started])

    @unary_boundary
    async def GetRebalanceStatus(self, request: admin_pb2.GetRebalanceStatusRequest,
                                 context: Context) -> admin_pb2.RebalanceStatus:
        apartment, unit = unit_of(request)
        record = rebalance_of(self.state, apartment, unit)
        if record is None:
            known = (apartment, unit) in self.state.units
            raise NotFound(f"unit {apartment}/{unit} " + (
                "has never been rebalanced" if known else "does not exist"), unit=unit)
        return rebalance_status_to_pb(record)
