"""Request building from flags: publish, deploy, rollout control, fleet and events."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from common.errors import InvalidArgument, InvalidVersion
from common.gen.landlord.v1 import admin_pb2, types_pb2
from coordinator.api.rollout_proto import settings_from_pb
from coordinator.cli.events import build_events_request
from coordinator.cli.fleet import build_gc_request, build_list_instances_request
from coordinator.cli.publish import (
    ChangeLists,
    PublishArgs,
    build_publish_request,
    load_change_file,
    parse_change_document,
)
from coordinator.cli.rollout_requests import (
    DeployArgs,
    build_control_request,
    build_deploy_request,
    build_get_rollout_request,
    build_list_rollouts_request,
    build_rollback_request,
)


def test_publish_request_carries_every_flag() -> None:
    args = PublishArgs(
        unit="shop/cart",
        version="1.3.0",
        image="landlord-demo:1",
        command="python3 -m http.server 'a b'",
        port=0,
        service_port=8080,
        health_path="/healthz",
        health_command="check --ready 'x y'",
        health_interval="2s",
        health_timeout="500ms",
        warmup="10s",
        env=("MODE=fast", "URL=http://x/?a=b"),
        cpu="500m",
        memory="256Mi",
        storage="1G",
        network="10Mbit",
        dependencies=("db@^1.2.0", "shared/cache@~2.1"),
        state_mode="snapshot",
        idle_timeout="30m",
        metadata=("git=abc123",),
        changes=ChangeLists(features=("search",), fixes=("typo",)),
    )
    request = build_publish_request(args)
    spec = request.spec
    assert request.version == "1.3.0"
    assert (spec.apartment, spec.unit, spec.image) == ("shop", "cart", "landlord-demo:1")
    assert list(spec.command) == ["python3", "-m", "http.server", "a b"]
    assert (spec.port, spec.service_port) == (0, 8080)
    assert spec.health.path == "/healthz"
    assert list(spec.health.command) == ["check", "--ready", "x y"]
    assert spec.health.interval.seconds == 2
    assert spec.health.timeout.nanos == 500_000_000
    assert spec.health.warmup.seconds == 10
    assert dict(spec.env) == {"MODE": "fast", "URL": "http://x/?a=b"}
    assert spec.resources == types_pb2.Resources(
        cpu_millis=500, memory_bytes=256 * 2**20, storage_bytes=10**9, network_bps=10_000_000
    )
    assert list(spec.dependencies) == ["db@^1.2.0", "shared/cache@~2.1"]
    assert spec.state_mode == types_pb2.STATE_MODE_SNAPSHOT
    assert spec.idle_timeout.seconds == 1800
    assert dict(request.metadata) == {"git": "abc123"}
    assert list(request.changes.features) == ["search"]
    assert list(request.changes.fixes) == ["typo"]
    assert not request.changes.breaking and not request.changes.internal


def test_publish_request_leaves_unset_flags_to_the_coordinator() -> None:
    request = build_publish_request(PublishArgs(unit="shop/cart", version="1.0.0", image="img"))
    assert not request.spec.HasField("health")
    assert not request.spec.HasField("resources")
    assert not request.spec.HasField("idle_timeout")
    assert request.spec.state_mode == types_pb2.STATE_MODE_UNSPECIFIED
    assert list(request.spec.command) == []
    assert request.spec.run_as_root is False
    root = build_publish_request(PublishArgs(unit="shop/cart", version="1.0.0", image="img",
                                             run_as_root=True))
    assert root.spec.run_as_root is True


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"unit": "cart"}, "is not APARTMENT/UNIT"),
        ({"image": " "}, "--image: an image"),
        ({"command": "echo 'unterminated"}, "--command: No closing quotation"),
        ({"port": 70000}, "--port: 70000 is not a port"),
        ({"service_port": 0}, "--service-port: 0 is not a port"),
        ({"health_path": "healthz"}, "--health-path must start with '/'"),
        ({"health_path": "/ok\r\nX: 1"}, "--health-path must start with '/'"),
        ({"health_command": " "}, "--health-command: empty command"),
        ({"health_interval": "2"}, "--health-interval: '2' is not a duration"),
        ({"env": ("NOVALUE",)}, "--env: 'NOVALUE' is not KEY=VALUE"),
        ({"cpu": "lots"}, "--cpu: 'lots' is not valid"),
        ({"memory": "256m"}, "'m' is ambiguous"),
        ({"network": "10MBps"}, "--network: '10MBps' is not valid"),
        ({"dependencies": ("db@>>1",)}, "--dep: version range '>>1' is not an npm range"),
        ({"dependencies": ("db@^1", "shop/db@^2")}, "shop/db is named more than once"),
        ({"state_mode": "copy"}, "--state-mode: 'copy' is not one of none, shared, snapshot"),
    ],
)
def test_publish_request_refuses_bad_flags(changes: dict[str, object], fragment: str) -> None:
    fields: dict[str, object] = {"unit": "shop/cart", "version": "1.0.0", "image": "img"}
    fields.update(changes)
    with pytest.raises(InvalidArgument) as caught:
        build_publish_request(PublishArgs(**fields))  # type: ignore[arg-type]
    assert fragment in str(caught.value)


def test_publish_request_refuses_a_malformed_version() -> None:
    with pytest.raises(InvalidVersion, match=r"version: '1\.0' is not a semantic version"):
        build_publish_request(PublishArgs(unit="shop/cart", version="1.0", image="img"))


def test_change_documents_in_toml_and_json(tmp_path: Path) -> None:
    toml_file = tmp_path / "changes.toml"
    toml_file.write_text('breaking = ["drop v1 API"]\nfixes = ["a", "b"]\n')
    json_file = tmp_path / "changes.json"
    json_file.write_text('{"features": ["search"], "internal": ["deps"]}')
    assert load_change_file(toml_file) == ChangeLists(breaking=("drop v1 API",), fixes=("a", "b"))
    assert load_change_file(json_file) == ChangeLists(features=("search",), internal=("deps",))
    guessed = parse_change_document('{"fixes": ["x"]}', "stdin")
    assert guessed + ChangeLists(fixes=("y",)) == ChangeLists(fixes=("x", "y"))


@pytest.mark.parametrize(
    ("text", "fmt", "fragment"),
    [
        ("fixes = [", "toml", "is not valid TOML"),
        ("{", "json", "is not valid JSON"),
        ("[1, 2]", "json", "must hold a table/object"),
        ('feature = ["x"]', "toml", "unknown key(s) feature; known: breaking, features"),
        ('fixes = "x"', "toml", "'fixes' in f must be a list of strings"),
        ('{"fixes": [1]}', "json", "must be a list of strings"),
    ],
)
def test_change_documents_refuse_bad_content(text: str, fmt: str, fragment: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_change_document(text, "f", fmt)
    assert fragment in str(caught.value)
    assert str(caught.value).startswith("--changes: ")


def test_change_file_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"--changes: cannot read .*No such file"):
        load_change_file(tmp_path / "missing.toml")


def test_deploy_canary_request() -> None:
    args = DeployArgs(
        unit="shop/cart",
        version="1.3.0",
        building="edge",
        replicas=3,
        strategy="canary",
        steps="5,25,50,100",
        monitor="30s",
        step_delay="10s",
        inconclusive_deadline="2m",
        max_error_rate="1%",
        max_p95="250ms",
        min_rps=5,
        min_requests=200,
    )
    request = build_deploy_request(args)
    assert (request.apartment, request.unit, request.version) == ("shop", "cart", "1.3.0")
    assert (request.building, request.replicas) == ("edge", 3)
    assert request.strategy == types_pb2.STRATEGY_CANARY
    assert list(request.canary.steps) == [5, 25, 50, 100]
    assert request.canary.monitor.seconds == 30
    assert request.canary.step_delay.seconds == 10
    assert request.canary.inconclusive_deadline.seconds == 120
    assert request.criteria.max_error_rate == pytest.approx(0.01)
    assert request.criteria.max_latency_p95.nanos == 250_000_000
    assert request.criteria.min_throughput_rps == 5
    assert request.criteria.min_requests == 200
    assert not request.HasField("blue_green")
    assert not request.HasField("sticky")  # the unit's default decides
    for choice in (True, False):
        chosen = build_deploy_request(replace(args, sticky=choice))
        assert chosen.HasField("sticky") and chosen.sticky is choice


def test_deploy_blue_green_request() -> None:
    args = DeployArgs(
        unit="shop/cart",
        version="2.0.0",
        building="edge",
        switch="gradual",
        gradual_steps=4,
        gradual_step_delay="3s",
        warmup="5s",
        cleanup_delay="30s",
        max_p95="300ms",
        performance_requests=50,
        check_http=("/healthz",),
        check_command=("test -f /ready",),
        manual_promotion=True,
    )
    request = build_deploy_request(args)
    settings = request.blue_green
    assert request.strategy == types_pb2.STRATEGY_BLUE_GREEN
    assert settings.switch_mode == types_pb2.SWITCH_MODE_GRADUAL
    assert settings.gradual_steps == 4
    assert settings.gradual_step_delay.seconds == 3
    assert settings_from_pb(request).gradual_step_delay_s == 3.0
    assert settings.warmup.seconds == 5
    assert settings.cleanup_delay.seconds == 30
    assert settings.max_latency_p95.nanos == 300_000_000
    assert request.criteria.max_latency_p95.nanos == 300_000_000
    assert settings.performance_requests == 50
    assert settings.checks[0].http == types_pb2.HttpCheck(path="/healthz", expect_status=200)
    assert settings.checks[1].command == "test -f /ready"
    assert settings.manual_promotion is True
    assert not request.HasField("canary")


def test_deploy_blue_green_with_canary_switch_takes_steps() -> None:
    args = DeployArgs(
        unit="shop/cart", version="2.0.0", building="edge", switch="canary", steps="10,100"
    )
    request = build_deploy_request(args)
    assert request.blue_green.switch_mode == types_pb2.SWITCH_MODE_CANARY
    assert list(request.canary.steps) == [10, 100]


def test_deploy_defaults_leave_settings_to_the_coordinator() -> None:
    request = build_deploy_request(DeployArgs(unit="shop/cart", version="1.0.0"))
    assert request.building == ""
    assert request.strategy == types_pb2.STRATEGY_BLUE_GREEN
    assert request.replicas == 0  # the unit's count, 1 for a first deploy
    assert not request.HasField("canary") and not request.HasField("criteria")
    assert request.blue_green.switch_mode == types_pb2.SWITCH_MODE_UNSPECIFIED


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"strategy": "rolling"}, "--strategy: 'rolling' is not one of blue-green, canary"),
        ({"building": "Edge Hosts"}, "--building: 'Edge Hosts' is not a building name"),
        ({"replicas": 0}, "--replicas must be a whole number from 1 to 1000, got 0"),
        ({"replicas": 2**31 - 1}, "--replicas must be a whole number from 1 to 1000"),
        ({"version": "2"}, "version: '2' is not a semantic version"),
        ({"steps": "5,25"}, "--steps: needs --strategy canary or --switch canary"),
        ({"monitor": "30s"}, "--monitor: needs --strategy canary"),
        ({"switch": "sideways"}, "--switch: 'sideways' is not one of immediate, gradual, canary"),
        ({"gradual_steps": 3}, "--gradual-steps: needs --switch gradual"),
        ({"gradual_step_delay": "3s"}, "--gradual-step-delay: needs --switch gradual"),
        ({"switch": "gradual", "gradual_steps": 2**31 - 1}, "--gradual-steps must be a whole"),
        ({"performance_requests": 2**31 - 1}, "--performance-requests must be a whole"),
        ({"strategy": "canary", "switch": "gradual"}, "--switch: applies to --strategy blue-green"),
        ({"strategy": "canary", "manual_promotion": True}, "--manual-promotion: applies to"),
        ({"strategy": "canary", "steps": "5,50"}, "--steps: the last step must be 100"),
        ({"strategy": "canary", "monitor": "30"}, "--monitor: '30' is not a duration"),
        ({"max_error_rate": "5"}, "--max-error-rate: '5' is not a rate between 0 and 1"),
        ({"max_p95": "fast"}, "--max-p95: 'fast' is not a duration"),
        ({"min_rps": -1.0}, "--min-rps: must be >= 0"),
        ({"min_requests": 0}, "--min-requests: must be at least 1"),
        ({"check_http": ("healthz",)}, "--check-http must start with '/'"),
        ({"check_http": ("/a b",)}, "--check-http must start with '/'"),
    ],
)
def test_deploy_refuses_bad_or_foreign_flags(changes: dict[str, object], fragment: str) -> None:
    fields: dict[str, object] = {"unit": "shop/cart", "version": "1.0.0", "building": "b"}
    fields.update(changes)
    with pytest.raises(InvalidArgument) as caught:
        build_deploy_request(DeployArgs(**fields))  # type: ignore[arg-type]
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    ("action", "value"),
    [
        ("promote", admin_pb2.ROLLOUT_CONTROL_PROMOTE),
        ("abort", admin_pb2.ROLLOUT_CONTROL_ABORT),
        ("pause", admin_pb2.ROLLOUT_CONTROL_PAUSE),
        ("resume", admin_pb2.ROLLOUT_CONTROL_RESUME),
        ("retry", admin_pb2.ROLLOUT_CONTROL_RETRY),
    ],
)
def test_control_requests(action: str, value: admin_pb2.RolloutControl.ValueType) -> None:
    request = build_control_request("shop/cart", action)
    assert request == admin_pb2.ControlRolloutRequest(apartment="shop", unit="cart", action=value)


def test_rollout_query_and_rollback_requests() -> None:
    assert build_rollback_request("shop/cart", None) == admin_pb2.RollbackRequest(
        apartment="shop", unit="cart"
    )
    assert build_rollback_request("shop/cart", "1.2.0").to_version == "1.2.0"
    with pytest.raises(InvalidVersion, match="--to: "):
        build_rollback_request("shop/cart", "last")
    assert build_get_rollout_request("shop/cart", None).rollout_id == ""
    assert build_get_rollout_request("shop/cart", "r-7").rollout_id == "r-7"
    assert build_list_rollouts_request("shop/cart", 5).limit == 5
    with pytest.raises(InvalidArgument, match="--limit"):
        build_list_rollouts_request("shop/cart", 0)
    with pytest.raises(InvalidArgument, match="action: 'skip' is not one of"):
        build_control_request("shop/cart", "skip")


def test_fleet_and_event_requests() -> None:
    assert build_list_instances_request("h1", "shop/cart", None) == admin_pb2.ListInstancesRequest(
        host_id="h1", apartment="shop", unit="cart"
    )
    assert build_list_instances_request(None, None, "shop").apartment == "shop"
    with pytest.raises(InvalidArgument, match="contradicts"):
        build_list_instances_request(None, "shop/cart", "other")
    with pytest.raises(InvalidArgument, match="--unit: 'cart' is not APARTMENT/UNIT"):
        build_list_instances_request(None, "cart", None)
    assert list(build_gc_request("h2", ["unused", "cache"]).gc_kinds) == [
        types_pb2.GC_KIND_UNUSED, types_pb2.GC_KIND_CACHE]
    with pytest.raises(InvalidArgument, match="--kind: 'disk' is not one of unused, memory, cache"):
        build_gc_request(None, ["disk"])
    events = build_events_request("shop/cart", None, True, "10m", 42)
    assert (events.apartment, events.unit, events.follow) == ("shop", "cart", True)
    assert (events.history.seconds, events.after_sequence) == (600, 42)
    assert not build_events_request(None, None, False, None, 0).HasField("history")
    with pytest.raises(InvalidArgument, match="--after"):
        build_events_request(None, None, False, None, -1)


def test_publish_request_carries_secrets_from_flags_and_a_file(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.env"
    secrets.write_text("# database\nDB_PASSWORD=p=w d\n\nAPI_KEY=k1\n")
    request = build_publish_request(PublishArgs(
        unit="shop/cart", version="1.0.0", image="img", env=("MODE=prod",),
        secret_env=("TOKEN=t0",), secret_env_file=secrets))
    assert dict(request.spec.secret_env) == {"TOKEN": "t0", "DB_PASSWORD": "p=w d",
                                             "API_KEY": "k1"}
    assert dict(request.spec.env) == {"MODE": "prod"}


@pytest.mark.parametrize(
    ("items", "text", "fragment"),
    [
        (("hunter2",), None, "--secret-env #1: expected KEY=VALUE"),
        (("A=hunter2",), "A=hunter2\n", "line 1: secret 'A' is given twice"),
        ((), "ok=1\nhunter2\n", "line 2: expected KEY=VALUE"),
    ],
)
def test_bad_secrets_are_refused_without_showing_them(
    tmp_path: Path, items: tuple[str, ...], text: str | None, fragment: str,
) -> None:
    path = None
    if text is not None:
        path = tmp_path / "secrets.env"
        path.write_text(text)
    with pytest.raises(InvalidArgument) as caught:
        build_publish_request(PublishArgs(unit="shop/cart", version="1.0.0", image="img",
                                          secret_env=items, secret_env_file=path))
    assert fragment in str(caught.value) and "hunter2" not in str(caught.value)


def test_an_unreadable_secret_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"--secret-env-file .*missing\.env"):
        build_publish_request(PublishArgs(unit="shop/cart", version="1.0.0", image="img",
                                          secret_env_file=tmp_path / "missing.env"))
