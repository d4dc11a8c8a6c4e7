"""Bounded inputs: every count, size, string and port of a spec or deploy is checked once,
before any work proportional to it, and errors quote only a short prefix of the input."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.dataplane.model import UnitSpec as PlaneUnit
from common.canary import validate_steps
from common.errors import InvalidArgument
from common.input_bounds import (
    CONTROL_PLANE_PORTS,
    MAX_ARG_BYTES,
    MAX_ARGS,
    MAX_CHECKS,
    MAX_ENV_TOTAL_BYTES,
    MAX_ENV_VALUE_BYTES,
    MAX_GRADUAL_STEPS,
    MAX_PERFORMANCE_REQUESTS,
    MAX_REPLICAS,
    QUOTE_PREFIX,
    check_path,
    quoted,
    request_too_large,
)
from common.resources import Resources, parse_bytes
from common.transport import COORDINATOR_PORT
from common.unit_spec import HealthCheck, UnitSpec
from common.versions import ChangeSet, VersionTag
from coordinator.api.rpc_errors import MAX_STATUS_TEXT, status_text
from coordinator.rollouts.settings import CheckSpec, RolloutSettings, equal_steps

HUGE = 2**31 - 1


def spec(**overrides: Any) -> UnitSpec:
    values: dict[str, Any] = {"apartment": "shop", "unit": "web", "version": "1.0.0",
                              "image": "demo:1", "port": 0, "service_port": 9000}
    values.update(overrides)
    return UnitSpec(**values)


def refused(build: Any, *words: str) -> str:
    started = time.perf_counter()
    with pytest.raises(InvalidArgument) as err:
        build()
    assert time.perf_counter() - started < 0.5, "refused before any proportional work"
    text = str(err.value)
    for word in words:
        assert word in text, text
    assert len(text) < 600, f"the error quotes too much: {len(text)} characters"
    return text


# -- the findings of the audit -----------------------------------------------------------


@pytest.mark.parametrize("name", ["gradual_steps", "replicas", "performance_requests"])
def test_a_count_of_2_31_minus_1_is_refused_at_once(name: str) -> None:
    values: dict[str, Any] = {name: HUGE}
    refused(lambda: RolloutSettings(**values), name, "from")


def test_each_count_is_accepted_up_to_its_bound_and_refused_past_it() -> None:
    for name, high in (("replicas", MAX_REPLICAS), ("gradual_steps", MAX_GRADUAL_STEPS),
                       ("performance_requests", MAX_PERFORMANCE_REQUESTS)):
        at: dict[str, Any] = {name: high}
        past: dict[str, Any] = {name: high + 1}
        assert getattr(RolloutSettings(**at), name) == high
        refused(lambda p=past: RolloutSettings(**p), name, str(high))
    refused(lambda: equal_steps(HUGE), "gradual_steps")
    assert equal_steps(MAX_GRADUAL_STEPS)[-1] == 100
    refused(lambda: RolloutSettings(checks=(CheckSpec(path="/"),) * (MAX_CHECKS + 1)),
            "checks")
    refused(lambda: validate_steps(list(range(1, 10**6))), "at most 100")


@pytest.mark.parametrize("path", ["/a\r\nPOST /v3/kv/put HTTP/1.1", "/a\nb", "/a b",
                                  "/a\"b", "/a'b", "/a\tb", "/a\0", "a", "", "/é",
                                  "/" + "a" * 2000])
def test_health_and_check_paths_must_be_plain_http_paths(path: str) -> None:
    refused(lambda: HealthCheck(path=path), "health_check.path")
    refused(lambda: CheckSpec(path=path) if path else CheckSpec(path="x"), "check path")


@given(st.text(), st.sampled_from(["\r", "\n"]), st.text())
def test_any_path_with_cr_or_lf_is_refused(before: str, bad: str, after: str) -> None:
    with pytest.raises(InvalidArgument):
        check_path("path", "/" + before + bad + after)


@given(st.text("abcXYZ019-._~!$&()*+,;=:@%/?", max_size=200))
def test_any_path_of_plain_characters_is_accepted(rest: str) -> None:
    assert HealthCheck(path="/" + rest).path == "/" + rest


@pytest.mark.parametrize("port", sorted(CONTROL_PLANE_PORTS))
def test_ports_of_the_control_plane_are_refused(port: int) -> None:
    refused(lambda: spec(service_port=port), "service_port", str(port))
    refused(lambda: spec(port=port), "port", str(port))


def test_the_coordinator_port_is_one_of_them() -> None:
    assert COORDINATOR_PORT in CONTROL_PLANE_PORTS


@pytest.mark.parametrize("value", ["a\0b", "a\nb", "a\rb"])
def test_env_values_with_nul_or_newline_are_refused(value: str) -> None:
    refused(lambda: spec(env={"A": value}), "env A")


def test_env_sizes_are_bounded() -> None:
    assert spec(env={"A": "x" * MAX_ENV_VALUE_BYTES}).env["A"]
    refused(lambda: spec(env={"A": "x" * 1_400_000}), "env A", "32768")
    refused(lambda: spec(env={"A": "é" * (MAX_ENV_VALUE_BYTES // 2 + 1)}), "bytes")
    many = {f"K{i}": "x" * 30_000 for i in range(MAX_ENV_TOTAL_BYTES // 30_000 + 1)}
    refused(lambda: spec(env=many), "env holds")
    refused(lambda: spec(env={f"K{i}": "" for i in range(5000)}), "5000 variables")
    refused(lambda: spec(env={"A" * 300: "x"}), "names are")


def test_commands_are_bounded() -> None:
    refused(lambda: spec(command=("x",) * 50_000), "50000 arguments")
    refused(lambda: spec(command=("x" * (MAX_ARG_BYTES + 1),)), "command argument")
    refused(lambda: spec(command=("x" * MAX_ARG_BYTES,) * 5), "command holds")
    refused(lambda: spec(command=("a\0b",)), "'\\x00'")
    assert len(spec(command=("sh", "-c", "echo a\necho b")).command) == 3
    assert len(spec(command=("x",) * MAX_ARGS).command) == MAX_ARGS
    refused(lambda: CheckSpec(argv=("x",) * 50_000), "check argv")


def test_resources_of_one_instance_are_bounded() -> None:
    refused(lambda: spec(resources=Resources(cpu=10**12)), "resources.cpu")  # 10^15 millicores
    refused(lambda: spec(resources=Resources(memory=5 << 40)), "resources.memory")
    assert spec(resources=Resources(cpu=256.0, memory=4 << 40)).resources.cpu == 256.0
    assert Resources(cpu=1024.0).cpu == 1024.0  # a host's capacity is not an instance's ask
    refused(lambda: parse_bytes("9" * 400), "not valid")


def test_durations_are_bounded() -> None:
    refused(lambda: RolloutSettings(monitor_s=1e12), "monitor_s")
    refused(lambda: RolloutSettings(max_latency_p95_ms=float("inf")), "max_latency_p95_ms")
    refused(lambda: HealthCheck(interval_s=1e9), "interval_s")
    refused(lambda: spec(warmup_s=1e9), "warmup_s")
    refused(lambda: spec(healthy_threshold=HUGE), "healthy_threshold")


# -- errors quote a prefix ---------------------------------------------------------------


@given(st.text(max_size=5000) | st.binary(max_size=5000) | st.integers())
def test_quoted_is_short(value: object) -> None:
    assert len(quoted(value)) <= QUOTE_PREFIX + 30


def test_an_error_never_echoes_a_huge_input() -> None:
    big = "x" * 1_000_000
    for build in (lambda: spec(image=big), lambda: spec(version=big[:100] + "!"),
                  lambda: spec(state_mode=big), lambda: HealthCheck(path="/" + big),
                  lambda: UnitSpec.from_dict({big: 1}), lambda: Resources.parse(cpu=big)):
        refused(build)


# -- accepted specs round-trip within their bounds -----------------------------------------


_SAFE = st.text(st.characters(blacklist_characters="\0\r\n", blacklist_categories=["Cs"]),
                max_size=50)  # no lone surrogates: not UTF-8 text, refused (test below)


@given(
    env=st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True), _SAFE,
                        max_size=8),
    command=st.lists(st.text(st.characters(blacklist_characters="\0", blacklist_categories=["Cs"]),
                             max_size=40),
                     max_size=8),
    service_port=st.integers(0, 65535),
    path=st.text("abz09-._~/?=&%", max_size=40).map(lambda p: "/" + p),
    cpu=st.floats(0, 300),
)
def test_an_accepted_spec_round_trips_and_stays_within_bounds(
        env: dict[str, str], command: list[str], service_port: int, path: str,
        cpu: float) -> None:
    try:
        made = spec(env=env, command=tuple(command), service_port=service_port,
                    health_check=HealthCheck(path=path), resources=Resources(cpu=cpu))
    except InvalidArgument:
        assert service_port in CONTROL_PLANE_PORTS or cpu > 256
        return
    assert UnitSpec.from_dict(made.to_dict()) == made
    assert service_port not in CONTROL_PLANE_PORTS and made.resources.cpu <= 256
    assert all("\n" not in v and "\0" not in v for v in made.env.values())


@given(replicas=st.integers(-10, 2 * MAX_REPLICAS), steps=st.integers(-10, 300),
       requests=st.integers(-10, 2 * MAX_PERFORMANCE_REQUESTS))
def test_accepted_rollout_settings_round_trip_within_bounds(
        replicas: int, steps: int, requests: int) -> None:
    try:
        made = RolloutSettings(replicas=replicas, gradual_steps=steps,
                               performance_requests=requests)
    except InvalidArgument:
        assert not (1 <= replicas <= MAX_REPLICAS and 1 <= steps <= MAX_GRADUAL_STEPS
                    and 0 <= requests <= MAX_PERFORMANCE_REQUESTS)
        return
    assert RolloutSettings.from_dict(made.to_dict()) == made
    assert len(made.blue_green_plan().gradual_steps) <= MAX_GRADUAL_STEPS


@pytest.mark.parametrize("build", [
    lambda: spec(unit="web\n"), lambda: spec(apartment="shop\n"),
    lambda: spec(image="demo:1\n"), lambda: spec(image_digest="sha256:" + "a" * 64 + "\n"),
    lambda: spec(env={"A\n": "x"}),
])
def test_a_final_newline_does_not_slip_past_a_pattern(build: Any) -> None:
    refused(build)


def test_publish_metadata_and_changes_are_bounded() -> None:
    made = spec()
    tag = VersionTag("shop/web", "1.0.0", 0.0, made.checksum(), made, {}, {"k": "v"})
    assert dict(tag.metadata) == {"k": "v"}
    for metadata in ({"k": "x" * 5000}, {f"k{i}": "" for i in range(100)},
                     {f"k{i}": "x" * 4000 for i in range(20)}, {"a\nb": "x"}):
        refused(lambda m=metadata: VersionTag("shop/web", "1.0.0", 0.0, "", made, {}, m),
                "metadata")
    refused(lambda: ChangeSet(features=("x",) * 101), "changes.features")
    refused(lambda: ChangeSet(fixes=("x" * 600,)), "changes.fixes entry")
    assert ChangeSet.from_dict({"breaking": ["a"]}).breaking == ("a",)


def test_status_texts_are_cut_at_the_grpc_boundary() -> None:
    long = InvalidArgument("x" * 100_000)
    assert len(status_text(long)) < MAX_STATUS_TEXT + 50
    assert status_text(InvalidArgument("short")) == "short"


@pytest.mark.parametrize("path", ["/ok'", "/ok\r\nX", "/a b", "/" + "a" * 1100])
def test_the_agents_data_plane_refuses_what_breaks_its_haproxy_config(path: str) -> None:
    refused(lambda: PlaneUnit("shop_web", 9000, path).validate(), "health path")
    PlaneUnit("shop_web", 9000, "/healthz?full=1").validate()


def test_versions_and_ranges_are_bounded_and_quoted_short() -> None:
    refused(lambda: spec(version="1.0.0-" + "a" * 1_000_000), "longer than 128")
    refused(lambda: spec(version="1.0.0-" + "a." * 500_000 + "!"), "longer than 128")
    refused(lambda: spec(dependencies=("db@^" + "1" * 300,)), "npm range")
    refused(lambda: spec(dependencies=("d" * 100_000 + "@^1",)), "unit name")
    assert spec(version="1.0.0-" + "a" * 122).version.endswith("a")


@given(st.sampled_from(["env", "secret_env", "command"]),
       st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF))
def test_text_that_is_not_utf8_is_refused_without_quoting_it(field: str, lone: str) -> None:
    """A lone surrogate (undecodable bytes on a command line) is refused, not a crash in
    the checksum or the protobuf encoder."""
    value = f"a{lone}b"
    changed: dict[str, Any] = {"command": ("serve", value)} if field == "command" else {
        field: {"KEY": value}}
    with pytest.raises(InvalidArgument) as refused:
        spec(**changed)
    assert "not valid UTF-8" in str(refused.value) and lone not in str(refused.value)


def test_grpc_size_refusal_said_in_words() -> None:
    details = "Received message larger than max (30000005 vs. 4194304)"
    assert request_too_large(details) == "request too large: 30000005 bytes, limit 4 MiB"
    assert request_too_large("SERVER: " + details + " ") is not None
    assert request_too_large("Received message larger than max (9 vs. 5)") == (
        "request too large: 9 bytes, limit 5 bytes")
    assert request_too_large("unit shop/web not found") is None
