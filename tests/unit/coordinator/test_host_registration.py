"""A registration's host id and building follow the identity name rule (common/identity.py):
a host the fleet accepts is one a ``landlord://host/<id>`` certificate can name."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.errors import InvalidArgument
from common.identity import IDENTITY_NAME_RULE, Identity, Role
from common.resources import Resources
from common.stream_messages import Registration
from coordinator.fleet.agent_sessions import _validated


def _registration(host_id: str, building: str = "demo") -> Registration:
    return Registration(host_id, building, "127.0.0.2", Resources(cpu=1, memory=1 << 30))


def _identity_accepts(name: str) -> bool:
    try:
        Identity(Role.HOST, name)
    except InvalidArgument:
        return False
    return True


def _fleet_accepts(host_id: str) -> bool:
    try:
        _validated(_registration(host_id))
    except InvalidArgument as exc:
        assert exc.context["field"] == "host_id", exc
        return False
    return True


@given(st.text(alphabet="aZ09_.-/ \n:é", max_size=70))
def test_the_fleet_accepts_exactly_the_host_ids_a_certificate_can_name(host_id: str) -> None:
    assert _fleet_accepts(host_id) == _identity_accepts(host_id)


@pytest.mark.parametrize("host_id", ["", "-h1", "h1\n", "h" * 64, "h/1"])
def test_a_bad_host_id_is_refused_with_the_rule(host_id: str) -> None:
    with pytest.raises(InvalidArgument, match="1-63 letters") as refused:
        _validated(_registration(host_id))
    assert IDENTITY_NAME_RULE in str(refused.value)


def test_a_bad_building_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="building"):
        _validated(_registration("h1", building="no building"))
