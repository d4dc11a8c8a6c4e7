"""Network modes: the spec field, its checksum rule, the CLI flag, the wire, the container
request, and the commands that shape a bridged instance on its veth."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.instances.container_config import build_create_request
from agent.instances.spec import InstanceSpec, Slot
from agent.limits.htb import shaped_device_commands
from agent.limits.veth_shaping import (
    ifb_minors,
    ifb_name,
    ifb_owner,
    owned_ifbs,
    release_commands,
    shaping_commands,
)
from common.errors import InvalidArgument
from common.network_modes import (
    DEFAULT_NETWORK_MODE,
    NetworkMode,
    effective_mode,
    parse_network_mode,
)
from common.unit_spec import UnitSpec
from coordinator.api.convert_admin import publish_from_pb, unit_spec_to_pb
from coordinator.cli.publish import PublishArgs, build_publish_request


def _unit(**overrides: object) -> UnitSpec:
    values: dict[str, object] = {"apartment": "shop", "unit": "cart", "version": "1.0.0",
                                 "image": "cart:1", "port": 0}
    values.update(overrides)
    return UnitSpec(**values)  # type: ignore[arg-type]


def _instance(mode: NetworkMode) -> InstanceSpec:
    return InstanceSpec(apartment="shop", unit="cart", version="1.0.0", slot=Slot.BLUE,
                        instance_id="cart-1", image="cart:1", port=24001, network_mode=mode)


@pytest.mark.parametrize("text", ["", "bridge", "host"])
def test_the_three_modes_parse(text: str) -> None:
    assert parse_network_mode(text).value == text


@given(st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
       .filter(lambda t: t not in {"", "bridge", "host"}))
def test_any_other_mode_is_refused_with_its_field(text: str) -> None:
    with pytest.raises(InvalidArgument, match="network_mode must be 'bridge' or 'host'"):
        parse_network_mode(text)


def test_unset_runs_as_the_default_and_a_chosen_mode_as_itself() -> None:
    assert effective_mode(NetworkMode.UNSET) is DEFAULT_NETWORK_MODE
    assert effective_mode(NetworkMode.BRIDGE) is NetworkMode.BRIDGE
    assert effective_mode(NetworkMode.HOST) is NetworkMode.HOST


def test_an_unset_mode_keeps_the_checksum_and_a_chosen_one_changes_it() -> None:
    before = _unit()
    assert "network_mode" not in before.content()
    assert _unit(network_mode="").checksum() == before.checksum()
    bridged, host = _unit(network_mode="bridge"), _unit(network_mode="host")
    assert len({before.checksum(), bridged.checksum(), host.checksum()}) == 3
    assert UnitSpec.from_dict(bridged.to_dict()) == bridged
    legacy = {k: v for k, v in before.to_dict().items() if k != "network_mode"}
    assert UnitSpec.from_dict(legacy).checksum() == before.checksum()  # records from before


def test_a_unit_spec_refuses_an_unknown_mode() -> None:
    with pytest.raises(InvalidArgument, match="network_mode"):
        _unit(network_mode="overlay")


@pytest.mark.parametrize("mode", ["bridge", "host", None])
def test_the_cli_flag_reaches_the_published_spec(mode: str | None) -> None:
    args = PublishArgs(unit="shop/cart", version="1.0.0", image="cart:1", network_mode=mode)
    request = build_publish_request(args)
    spec, _, _ = publish_from_pb(request)
    assert spec.network_mode.value == (mode or "")
    assert unit_spec_to_pb(spec).network_mode == (mode or "")


def test_the_cli_flag_refuses_a_wrong_mode_naming_the_flag() -> None:
    args = PublishArgs(unit="shop/cart", version="1.0.0", image="cart:1", network_mode="lan")
    with pytest.raises(InvalidArgument, match="--network-mode"):
        build_publish_request(args)


def test_a_publish_request_with_a_wrong_mode_is_invalid() -> None:
    request = build_publish_request(PublishArgs(unit="shop/cart", version="1.0.0",
                                                image="cart:1"))
    request.spec.network_mode = "overlay"
    with pytest.raises(InvalidArgument, match="network_mode"):
        publish_from_pb(request)


def test_a_bridged_container_joins_the_bridge_and_publishes_its_port() -> None:
    request = build_create_request(
        _instance(NetworkMode.BRIDGE), host_id="h1", advertise_address="127.0.0.2",
        generation=1, state_host_dir=None, extra_labels={}, hard_storage_quota=False,
        bridge_network="landlord")
    assert request.network_mode == "landlord"
    assert request.published == {24001: ("127.0.0.2", 24001)}
    assert request.env["BIND"] == "0.0.0.0" and request.env["PORT"] == "24001"
    assert request.cap_drop == ("ALL",)


def test_a_host_network_container_binds_the_advertise_address() -> None:
    request = build_create_request(
        _instance(NetworkMode.HOST), host_id="h1", advertise_address="127.0.0.2",
        generation=1, state_host_dir=None, extra_labels={}, hard_storage_quota=False,
        bridge_network="landlord")
    assert request.network_mode == "host" and not request.published
    assert request.env["BIND"] == "127.0.0.2"


def test_bridged_without_a_network_is_refused() -> None:
    with pytest.raises(ValueError, match="bridge network"):
        build_create_request(
            _instance(NetworkMode.BRIDGE), host_id="h1", advertise_address="127.0.0.2",
            generation=1, state_host_dir=None, extra_labels={}, hard_storage_quota=False)


@pytest.mark.parametrize("mode", list(NetworkMode))
def test_an_instance_spec_keeps_its_mode_through_its_record(mode: NetworkMode) -> None:
    spec = _instance(mode)
    data = spec.to_dict()
    assert ("network_mode" in data) == bool(mode)  # unset: labels read as before
    assert InstanceSpec.from_dict(data) == spec


def test_veth_shaping_shapes_both_directions_of_the_veth() -> None:
    minor, rate = 0x12, 8_000_000
    ifb = ifb_name(minor)
    assert ifb == "llifb12" and len(ifb) <= 15
    joined = [" ".join(c) for c in shaping_commands("veth1a2b", minor, rate)]
    assert joined[0] == "ip link set llifb12 up"
    # the container's egress: the veth's ingress redirected to the ifb, shaped there
    assert joined[1] == "tc qdisc replace dev llifb12 root handle 1: htb default 12"
    assert joined[2].startswith("tc class replace dev llifb12 parent 1: classid 1:12 htb "
                                "rate 8000000bit")
    assert joined[3].startswith("tc qdisc replace dev llifb12 parent 1:12 handle 12: bfifo")
    assert "dev veth1a2b handle ffff: ingress" in joined[4]
    assert joined[5].endswith("action mirred egress redirect dev llifb12")
    # the container's ingress: the veth's own egress, the same class at the same rate
    assert joined[6:] == [" ".join(c) for c in shaped_device_commands("veth1a2b", minor, rate)]
    assert joined[6] == "tc qdisc replace dev veth1a2b root handle 1: htb default 12"
    assert release_commands(minor) == [["ip", "link", "del", "llifb12"]]


def test_ifb_minors_are_read_from_ip_link() -> None:
    text = ("1: lo: <LOOPBACK,UP> mtu 65536 qdisc noqueue\n"
            "7: llifb1a: <BROADCAST,NOARP,UP> mtu 1500 qdisc htb\n"
            "8: llifbp3f2: <BROADCAST,NOARP> mtu 1500 qdisc noop\n"
            "9: veth1a2b@if8: <BROADCAST,UP> mtu 1500 qdisc htb\n"
            "10: llifb10@NONE: <BROADCAST> mtu 1500\n")
    assert ifb_minors(text) == {0x1A, 0x10}  # the agent's probe device is no minor


def test_the_agent_settings_document_the_bridge(tmp_path: Path) -> None:
    from agent.config import AgentConfig
    config = AgentConfig(host_id="h1", data_dir=tmp_path)
    assert (config.bridge_network, config.bridge_subnet, config.bridge_interface) == (
        "landlord", "198.18.0.0/24", "landlord0")
    for bad in ({"bridge_subnet": "not-a-net"}, {"bridge_subnet": "198.18.0.0/30"},
                {"bridge_interface": "a-name-longer-than-15"}):
        with pytest.raises(InvalidArgument):
            AgentConfig(host_id="h1", data_dir=tmp_path, **bad)  # type: ignore[arg-type]


def test_an_agent_finds_the_ifbs_it_owns() -> None:
    links = [{"ifname": "ifb0"},  # the module's own, no alias
             {"ifname": "llifb10", "ifalias": ifb_owner("bw-h1", "i-1")},
             {"ifname": "llifb11", "ifalias": ifb_owner("bw-h10", "i-2")},
             {"ifname": "llifb12", "ifalias": "someone else's"},
             {"ifname": "llifbp3f", "ifalias": ifb_owner("bw-h1", "probe")}]
    text = json.dumps(links)
    assert owned_ifbs(text, ifb_owner("bw-h1", "")) == {"llifb10": 0x10}
    assert owned_ifbs(text, ifb_owner("bw-", "")[:-1]) == {"llifb10": 0x10, "llifb11": 0x11}
    assert owned_ifbs("", "landlord/") == {}
