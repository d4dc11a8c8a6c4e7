"""Stop, delete and scale at the edge: the request's unit checked, the change in protobuf
(the Admin service only delegates here and to coordinator/rollouts/unit_service.py)."""

from __future__ import annotations

from typing import Any

from common.dependencies import qualify
from common.errors import InvalidArgument
from common.gen.landlord.v1 import admin_pb2
from common.input_bounds import MAX_REPLICAS
from coordinator.api.convert_admin import unit_to_pb
from coordinator.api.read_models import UnitListing
from coordinator.rollouts.pause_service import PauseChange
from coordinator.rollouts.unit_service import UnitChange

__all__ = ["pause_change_to_pb", "paused_ids", "unit_change_to_pb", "unit_of"]


def unit_of(request: Any) -> tuple[str, str]:
    """(apartment, unit) of a StopUnit, DeleteUnit or ScaleUnit request, both valid names
    (INVALID_ARGUMENT otherwise)."""
    if not request.apartment or not request.unit:
        raise InvalidArgument("apartment and unit are required (APARTMENT/UNIT)", field="unit")
    apartment, _, unit = qualify(request.unit, request.apartment).partition("/")
    if apartment != request.apartment:
        raise InvalidArgument(f"unit {request.unit!r} must be a name without '/'",
                              field="unit")
    return apartment, unit


def unit_change_to_pb(change: UnitChange) -> admin_pb2.UnitChangeResponse:
    return admin_pb2.UnitChangeResponse(
        unit=unit_to_pb(UnitListing(change.unit, change.instances)), changed=change.changed,
        started=list(change.started), stopped=list(change.stopped))


def paused_ids(request: admin_pb2.PauseUnitRequest) -> tuple[str, ...]:
    """The instances a PauseUnit or ResumeUnit names (INVALID_ARGUMENT past MAX_REPLICAS)."""
    if len(request.instance_ids) > MAX_REPLICAS:
        raise InvalidArgument(f"at most {MAX_REPLICAS} instance ids, got "
                              f"{len(request.instance_ids)}", field="instance_ids")
    return tuple(request.instance_ids)


def pause_change_to_pb(change: PauseChange) -> admin_pb2.PauseUnitResponse:
    return admin_pb2.PauseUnitResponse(
        unit=unit_to_pb(UnitListing(change.unit, change.instances)),
        changed=bool(change.changed), instances=list(change.changed),
        paused=list(change.paused))
