"""The admin calls that change whether a unit's instances run without a rollout: PauseUnit,
ResumeUnit (coordinator/rollouts/pause_service.py) and WakeUnit (idle collection,
coordinator/fleet/idle_units.py), mixed into AdminService."""

from __future__ import annotations

from typing import Any

from common.errors import FailedPrecondition, Unavailable
from common.gen.landlord.v1 import admin_pb2
from coordinator.api.convert_admin import unit_to_pb
from coordinator.api.read_models import ClusterReads
from coordinator.api.rpc_errors import unary_boundary
from coordinator.api.unit_changes_proto import pause_change_to_pb, paused_ids, unit_of
from coordinator.fleet.idle_units import IdleUnits
from coordinator.rollouts.pause_service import PauseService

__all__ = ["UnitStateRpcs"]

Context = Any


class UnitStateRpcs:
    reads: ClusterReads
    pauses: PauseService | None
    idle: IdleUnits | None

    @unary_boundary
    async def WakeUnit(self, request: admin_pb2.WakeUnitRequest, context: Context
                       ) -> admin_pb2.UnitChangeResponse:
        apartment, unit = unit_of(request)
        self.reads.unit(apartment, unit)  # NOT_FOUND for an unknown unit
        if self.idle is None:
            raise FailedPrecondition("idle collection is not set up on this coordinator")
        started = await self.idle.wake(apartment, unit, "landlord units wake")
        detail = self.reads.unit(apartment, unit)
        return admin_pb2.UnitChangeResponse(unit=unit_to_pb(detail.unit),
                                            changed=bool(started), started=list(started))

    @unary_boundary
    async def PauseUnit(self, request: admin_pb2.PauseUnitRequest, context: Context
                        ) -> admin_pb2.PauseUnitResponse:
        return pause_change_to_pb(await self._pauses().pause(*unit_of(request),
                                                             paused_ids(request)))

    @unary_boundary
    async def ResumeUnit(self, request: admin_pb2.PauseUnitRequest, context: Context
                         ) -> admin_pb2.PauseUnitResponse:
        return pause_change_to_pb(await self._pauses().resume(*unit_of(request),
                                                              paused_ids(request)))

    def _pauses(self) -> PauseService:
        if self.pauses is None:
            raise Unavailable("pausing is not set up on this coordinator")
        return self.pauses
