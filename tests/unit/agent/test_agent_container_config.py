"""InstanceSpec -> container create request: labels, networking, limits, secure defaults."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.instances.container_config import LABEL_SPEC, build_create_request
from agent.instances.secret_env import redact_inspect, restore_secrets
from agent.instances.spec import HealthSpec, InstanceSpec, ResourceSpec, StateMode
from common.errors import InvalidArgument
from common.network_modes import NetworkMode
from common.unit_spec import REDACTED


def _spec(**overrides: object) -> InstanceSpec:
    values: dict[str, object] = {
        "apartment": "shop",
        "unit": "cart",
        "version": "1.2.3",
        "slot": "green",
        "instance_id": "cart-7",
        "image": "cart:1.2.3",
        "port": 24001,
        "env": {"MODE": "x", "PORT": "overridden"},
        "resources": ResourceSpec(cpu=1.5, memory=64 * 1024 * 1024, pids=99),
        "state_mode": StateMode.SNAPSHOT,
        "network_mode": NetworkMode.HOST,  # bridged: tests/unit/test_network_modes.py
    }
    values.update(overrides)
    return InstanceSpec(**values)  # type: ignore[arg-type]


def test_request_carries_labels_network_limits_and_defaults() -> None:
    spec = _spec()
    request = build_create_request(
        spec,
        host_id="h2",
        advertise_address="127.0.0.2",
        generation=3,
        state_host_dir=Path("/data/state/cart-7"),
        extra_labels={"landlord.test": "1"},
        hard_storage_quota=False,
    )
    assert request.name == "landlord-h2-cart-7-g3"
    assert {k: v for k, v in request.labels.items() if k != LABEL_SPEC} == {
        "landlord.test": "1",
        "landlord.host": "h2",
        "landlord.apartment": "shop",
        "landlord.unit": "cart",
        "landlord.version": "1.2.3",
        "landlord.slot": "green",
        "landlord.instance": "cart-7",
        "landlord.generation": "3",
    }
    assert InstanceSpec.from_dict(json.loads(request.labels[LABEL_SPEC])) == spec
    assert request.network_mode == "host"
    assert request.env["PORT"] == "24001" and request.env["BIND"] == "127.0.0.2"
    assert request.env["MODE"] == "x" and request.env["STATE_DIR"] == "/state"
    assert request.nano_cpus == 1_500_000_000 and request.pids_limit == 99
    assert request.mem_limit == request.memswap_limit == 64 * 1024 * 1024
    assert request.cap_drop == ("ALL",) and request.security_opt == ("no-new-privileges:true",)
    assert request.init and request.read_only and "/tmp" in request.tmpfs
    assert request.mounts[0].source == "/data/state/cart-7"
    assert request.mounts[0].target == "/state" and not request.storage_opt


def test_hard_quota_and_writable_root_when_asked() -> None:
    spec = _spec(state_mode=StateMode.NONE, read_only_rootfs=False)
    request = build_create_request(
        spec,
        host_id="h",
        advertise_address="127.0.0.1",
        generation=1,
        state_host_dir=None,
        extra_labels={},
        hard_storage_quota=True,
    )
    assert request.storage_opt == {"size": str(spec.resources.storage)}
    assert not request.read_only and not request.tmpfs and not request.mounts
    assert "STATE_DIR" not in request.env


@pytest.mark.parametrize(
    "overrides",
    [
        {"unit": "Bad Name"},
        {"port": 0},
        {"instance_id": "../x"},
        {"state_dir": "rel"},
        {"health": {"path": "nope"}},
        {"resources": {"memory": 1024}},
        {"slot": "red"},
    ],
)
def test_bad_specs_are_refused(overrides: dict[str, object]) -> None:
    data = _spec().to_dict()
    for key, value in overrides.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    with pytest.raises((InvalidArgument, ValueError)):
        InstanceSpec.from_dict(data)


def test_spec_round_trips_through_json() -> None:
    spec = _spec(health=HealthSpec(path="/h", warmup=2.5), command=("python3", "-c", "1"))
    assert InstanceSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_secrets_go_to_the_environment_and_their_names_only_to_the_label() -> None:
    spec = _spec(secret_env={"TOKEN": "hunter2-value"})
    request = build_create_request(
        spec, host_id="h2", advertise_address="127.0.0.2", generation=1,
        state_host_dir=Path("/data/state/cart-7"), extra_labels={}, hard_storage_quota=False)
    assert request.env["TOKEN"] == "hunter2-value"
    assert all("hunter2" not in value for value in request.labels.values())
    labelled = InstanceSpec.from_dict(json.loads(request.labels[LABEL_SPEC]))
    assert dict(labelled.secret_env) == {"TOKEN": REDACTED}
    env_lines = [f"{k}={v}" for k, v in request.env.items()]
    assert restore_secrets(labelled, env_lines) == spec
    inspect: dict[str, Any] = {"Config": {"Env": env_lines, "Labels": request.labels}}
    redacted = redact_inspect(inspect, spec.secret_env)
    assert "hunter2" not in json.dumps(redacted) and f"TOKEN={REDACTED}" in \
        redacted["Config"]["Env"]
    assert "MODE=x" in redacted["Config"]["Env"] and inspect["Config"]["Env"] == env_lines


def test_an_instance_spec_printed_in_a_log_shows_no_secret() -> None:
    assert "hunter2" not in repr(_spec(secret_env={"TOKEN": "hunter2-value"}))
