from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from agent.dataplane.haproxy_config import render_config, render_map
from agent.dataplane.model import DataPlaneSpec, ServerSpec, ServerState, UnitSpec
from agent.dataplane.settings import DataPlaneSettings, HaproxyPaths
from agent.dataplane.wake_hold import render_hold_script
from common.errors import InvalidArgument

PATHS = HaproxyPaths(Path("/data/haproxy"))
SETTINGS = DataPlaneSettings(log_sockets=2)


def spec_with(
    *servers: ServerSpec, sticky: bool = False, health: str = "/healthz"
) -> DataPlaneSpec:
    unit = UnitSpec("web", 8080, health, sticky)
    for item in servers:
        unit = unit.with_server(item)
    return DataPlaneSpec("127.0.0.2").with_unit(unit)


A = ServerSpec("a", "127.0.0.3", 31001, "1.0.0", 30)
B = ServerSpec("b", "127.0.0.4", 31002, "1.1.0", 70)


def test_frontend_binds_the_advertise_address_and_logs_to_every_socket() -> None:
    text = render_config(spec_with(A, B), PATHS, SETTINGS).text
    assert "frontend fe.web\n    bind 127.0.0.2:8080\n" in text
    assert "log /data/haproxy/requests.0.sock len 4096 format raw sample 1:2 local0 info" in text
    assert "log /data/haproxy/requests.1.sock len 4096 format raw sample 2:2 local0 info" in text
    assert '"v":"%[srv_name,map(/data/haproxy/maps/web.version.map)]"' in text
    assert "req.hdr(X-Landlord-Version),map(/data/haproxy/maps/web.pin.map)" in text
    assert "default_backend be.web" in text
    assert "stats socket /data/haproxy/admin.sock mode 600 level admin expose-fd listeners" in text
    assert "server-state-file /data/haproxy/servers.state" in text
    assert "chroot" not in text and "\n    user " not in text


def test_log_sampling_spreads_one_line_in_n_over_the_sockets() -> None:
    every = dataclasses.replace(SETTINGS, log_sample_every=50)
    text = render_config(spec_with(A, B), PATHS, every).text
    assert "requests.0.sock len 4096 format raw sample 1:100 local0 info" in text
    assert "requests.1.sock len 4096 format raw sample 2:100 local0 info" in text
    one = dataclasses.replace(SETTINGS, log_sockets=1)
    assert "requests.0.sock len 4096 format raw local0 info" in render_config(
        spec_with(A), PATHS, one).text
    with pytest.raises(InvalidArgument):
        dataclasses.replace(SETTINGS, log_sample_every=0)


def test_backends_carry_weights_health_checks_and_maintenance() -> None:
    maint = ServerSpec("c", "127.0.0.3", 31003, "1.0.0", 5, ServerState.MAINT)
    text = render_config(spec_with(A, B, maint), PATHS, SETTINGS).text
    main = text.split("\nbackend be.web\n", 1)[1].split("\n\n", 1)[0]
    assert "    balance roundrobin" in main and "    option httpchk GET /healthz" in main
    assert "    server a 127.0.0.3:31001 weight 30 check inter 1000 rise 2 fall 2" in main
    assert "    server b 127.0.0.4:31002 weight 70 check" in main
    assert "    server c 127.0.0.3:31003 weight 5 check inter 1000 rise 2 fall 2 disabled" in main
    pin0 = text.split("backend pin0.web\n", 1)[1].split("\n\n", 1)[0]
    assert "server a 127.0.0.3:31001 weight 1 " in pin0 and "server c " in pin0
    assert "server b " not in pin0
    for keyword in ("option redispatch", "retries 3", "load-server-state-from-file global"):
        assert keyword in text


def test_stickiness_is_switched_by_its_map_not_by_the_config() -> None:
    plain = render_config(spec_with(A, B), PATHS, SETTINGS)
    sticky = render_config(spec_with(A, B, sticky=True), PATHS, SETTINGS)
    # the same config (no reload to turn stickiness on or off); only the sticky map differs
    assert plain.text == sticky.text and plain.skeleton_hash == sticky.skeleton_hash
    assert "req.cook(LLV_web),map" not in plain.text
    assert "var(txn.ll_cookie),map(/data/haproxy/maps/web.sticky.map)" in plain.text
    # a cookie is only issued for a version in the sticky map
    assert ('add-header Set-Cookie "LLV_web=%[var(txn.ll_ver)]; Path=/" if '
            "{ var(txn.ll_ver),map(/data/haproxy/maps/web.sticky.map) -m found }") in plain.text
    assert plain.maps[PATHS.map_file("web", "sticky")] == ""
    assert sticky.maps[PATHS.map_file("web", "sticky")] == "1.0.0 pin0.web\n1.1.0 pin1.web\n"


def test_maps_are_rendered_for_each_unit() -> None:
    maps = render_config(spec_with(A, B), PATHS, SETTINGS).maps
    assert maps[PATHS.map_file("web", "pin")] == "1.0.0 pin0.web\n1.1.0 pin1.web\n"
    assert maps[PATHS.map_file("web", "sticky")] == ""
    assert maps[PATHS.map_file("web", "version")] == "a 1.0.0\nb 1.1.0\n"
    assert render_map({"b": "2", "a": "1"}) == "a 1\nb 2\n"


def test_skeleton_ignores_servers_but_not_structure() -> None:
    base = render_config(spec_with(A), PATHS, SETTINGS).skeleton_hash
    more_servers = spec_with(A, B)
    reweighted = spec_with(dataclasses.replace(A, weight=1, state=ServerState.DRAIN))
    assert render_config(more_servers, PATHS, SETTINGS).skeleton_hash == base
    assert render_config(reweighted, PATHS, SETTINGS).skeleton_hash == base
    assert render_config(spec_with(A, health="/ready"), PATHS, SETTINGS).skeleton_hash != base
    assert render_config(spec_with(A, sticky=True), PATHS, SETTINGS).skeleton_hash == base
    four_versions = spec_with(
        *(ServerSpec(f"s{i}", "127.0.0.3", 31000 + i, f"{i}.0.0", 1) for i in range(4))
    )
    assert render_config(four_versions, PATHS, SETTINGS).skeleton_hash != base
    other_unit = spec_with(A).with_unit(UnitSpec("api", 9090))
    assert render_config(other_unit, PATHS, SETTINGS).skeleton_hash != base
    text = render_config(spec_with(A), PATHS, SETTINGS).text
    assert f"# landlord-skeleton {base}" in text


def test_rendering_is_deterministic_and_servers_are_sorted() -> None:
    assert render_config(spec_with(A, B), PATHS, SETTINGS) == render_config(
        spec_with(A, B), PATHS, SETTINGS
    )
    text = render_config(spec_with(B, A), PATHS, SETTINGS).text
    main = text.split("\nbackend be.web\n", 1)[1].split("\n\n", 1)[0]
    assert main.index("server a ") < main.index("server b ")


def test_a_paused_units_503s_carry_retry_after_only_while_paused() -> None:
    plain = render_config(spec_with(A, B), PATHS, SETTINGS)
    unit = dataclasses.replace(spec_with(A, B).units["web"], retry_after_s=10)
    paused = render_config(DataPlaneSpec("127.0.0.2").with_unit(unit), PATHS, SETTINGS)
    assert "Retry-After" not in plain.text
    assert "    http-after-response set-header Retry-After 10 if { status 503 }\n" in paused.text
    assert paused.skeleton_hash != plain.skeleton_hash  # a hitless reload switches it
    assert UnitSpec.from_dict(unit.to_dict()) == unit


def test_requests_are_held_only_with_a_hold_script() -> None:
    plain = render_config(spec_with(A, B), PATHS, SETTINGS).text
    assert "lua" not in plain
    held = render_config(spec_with(A, B), PATHS, dataclasses.replace(
        SETTINGS, hold_script="/run/ll/wake_hold.lua")).text
    assert "    lua-load /run/ll/wake_hold.lua" in held
    backends = held.split("\nbackend ")[1:]
    assert backends and all(
        "http-request lua.landlord_hold if !{ nbsrv gt 0 }" in b for b in backends)


def test_the_hold_script_names_the_agent_and_its_bounds() -> None:
    script = render_hold_script("127.0.0.2", 7481, 30.0, 100)
    assert 'local AGENT_ADDR, AGENT_PORT = "127.0.0.2", 7481' in script
    assert "local HOLD_MS, MAX_HELD, POLL_MS = 30000, 100, 50" in script
    assert 'core.register_action("landlord_hold", {"http-req"}' in script
