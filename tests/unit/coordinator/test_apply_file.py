"""`landlord apply -f`: a unit file means exactly what the same flags mean, bad files are
refused naming the key, and the plan publishes only new versions, refuses a published
version with other content, and deploys only what is not running as declared."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.errors import FailedPrecondition, InvalidArgument
from common.unit_spec import UnitSpec
from coordinator.api.convert_admin import publish_from_pb
from coordinator.cli.apply_file import parse_unit_file
from coordinator.cli.apply_plan import Published, UnitNow, plan_apply
from coordinator.cli.publish import ChangeLists, PublishArgs, build_publish_request
from coordinator.cli.rollout_requests import DeployArgs, build_deploy_request

DIGEST = "sha256:" + "ab" * 32
FILE = """
unit = "shop/web"
version = "1.4.0"

[publish]
image = "127.0.0.1:5000/web:1.4.0"
command = ["/app/server", "--mode", "fast lane"]
service_port = 8080
health_path = "/healthz"
health_interval = "2s"
cpu = "250m"
memory = "128Mi"
env = { LOG_LEVEL = "info", REGION = "eu" }
secret_env_file = "web.secrets"
dependencies = ["shop/db@^2"]
metadata = { git = "abc123" }

[publish.changes]
features = ["search by tag"]

[deploy]
building = "eu-1"
replicas = 3
strategy = "canary"
steps = [10, 50, 100]
monitor = "2m"
max_error_rate = "1%"
min_requests = 50
"""


def test_a_file_means_what_the_same_flags_mean(tmp_path: Path) -> None:
    (tmp_path / "web.secrets").write_text("TOKEN=abc\n")
    declared = parse_unit_file(FILE, "web.toml", tmp_path)
    flags = PublishArgs(
        unit="shop/web", version="1.4.0", image="127.0.0.1:5000/web:1.4.0",
        command="/app/server --mode 'fast lane'", service_port=8080, health_path="/healthz",
        health_interval="2s", cpu="250m", memory="128Mi",
        env=("LOG_LEVEL=info", "REGION=eu"), secret_env_file=tmp_path / "web.secrets",
        dependencies=("shop/db@^2",), metadata=("git=abc123",),
        changes=ChangeLists(features=("search by tag",)))
    assert build_publish_request(declared.publish) == build_publish_request(flags)
    deploy = DeployArgs(unit="shop/web", version="1.4.0", building="eu-1", replicas=3,
                        strategy="canary", steps="10,50,100", monitor="2m",
                        max_error_rate="1%", min_requests=50)
    assert build_deploy_request(declared.deploy) == build_deploy_request(deploy)
    assert build_publish_request(declared.publish).spec.secret_env == {"TOKEN": "abc"}
    assert build_publish_request(declared.publish).spec.run_as_root is False
    root = parse_unit_file(FILE.replace("[publish]\n", "[publish]\nrun_as_root = true\n"),
                           "web.toml", tmp_path)
    assert build_publish_request(root.publish).spec.run_as_root is True


@pytest.mark.parametrize(("text", "message"), [
    ("unit = 'a/b'\n", "version is required"),
    ("unit = 'a/b'\nversion = '1.0.0'\n[publish]\ncpu = '1'\n", "image is required"),
    ("unit = 'a/b'\nversion = '1.0.0'\n[publish]\nimage = 'x'\nimgae = 'y'\n",
     "unknown key\\(s\\) imgae"),
    ("unit = 'a/b'\nversion = '1.0.0'\nreplicas = 2\n[publish]\nimage = 'x'\n",
     "unknown key\\(s\\) replicas"),
    ("unit = 'a/b'\nversion = '1.0.0'\n[publish]\nimage = 'x'\nsecret_env = {A = 'b'}\n",
     "unknown key\\(s\\) secret_env"),
    ("unit = 'a/b'\nversion = '1.0.0'\n[publish]\nimage = 'x'\n[deploy]\nreplicas = '2'\n",
     "replicas must be a whole number"),
    ("unit = 'a/b'\nversion = '1.0.0'\n[publish]\nimage = 'x'\nenv = ['A=b']\n",
     "env must be a table"),
    ("unit = 'a/b'\nversion = '1.0.0'\n[publish]\nimage = 'x'\n[deploy]\nsteps = [true]\n",
     "steps must be numbers"),
    ("unit = 'a/b'\nversion = \n", "not valid TOML"),
])
def test_bad_files_are_refused_naming_the_key(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse_unit_file(text, "u.toml", Path("."))


def spec(version: str = "1.4.0", **fields: Any) -> UnitSpec:
    request = build_publish_request(PublishArgs(unit="shop/web", version=version,
                                                image="web:1", cpu="250m", memory="64Mi"))
    base = publish_from_pb(request)[0]
    return replace(base, **fields)


def test_a_new_version_is_published_and_deployed_with_its_differences() -> None:
    old = spec("1.3.0")
    new = spec("1.4.0", image="web:2", env={"A": "1"})
    plan = plan_apply(new, 2, "canary", {"1.3.0": Published(old, "")}, "1.3.0",
                      UnitNow("running", "1.3.0", {"1.3.0": 2}))
    assert (plan.publish, plan.deploy) == (True, True)
    assert plan.lines[0] == "publish shop/web 1.4.0"
    assert "  env: {} -> {'A': '1'}" in plan.lines
    assert "  image: web:1 -> web:2" in plan.lines
    assert plan.lines[-1] == "deploy shop/web 1.4.0: 2 instance(s) by canary, replacing 1.3.0"


def test_what_runs_as_declared_changes_nothing() -> None:
    now = spec("1.4.0", secret_env={"TOKEN": "<secret>"})
    declared = spec("1.4.0", secret_env={"TOKEN": "the real value"})
    plan = plan_apply(declared, 2, "canary", {"1.4.0": Published(now, DIGEST)}, "1.4.0",
                      UnitNow("running", "1.4.0", {"1.4.0": 2}))
    assert not plan.changes_anything
    # another number of instances is a deploy of the same version
    more = plan_apply(declared, 3, "canary", {"1.4.0": Published(now, DIGEST)}, "1.4.0",
                      UnitNow("running", "1.4.0", {"1.4.0": 2}))
    assert (more.publish, more.deploy) == (False, True)


@given(st.sampled_from(["image", "port", "env", "command", "secret_env"]))
def test_a_published_version_with_other_content_is_refused(field: str) -> None:
    changed: dict[str, Any] = {"image": "web:9", "port": 9999, "env": {"X": "1"},
                               "command": ("sh",), "secret_env": {"NEW": "v"}}
    with pytest.raises(FailedPrecondition, match="versions are immutable"):
        plan_apply(spec("1.4.0", **{field: changed[field]}), 1, "blue-green",
                   {"1.4.0": Published(spec(), "")}, "1.4.0", None)


def test_apply_during_a_rollout_is_refused() -> None:
    with pytest.raises(FailedPrecondition, match="rollout in progress"):
        plan_apply(spec(), 1, "canary", {}, "", UnitNow("rolling_out", "1.3.0", {}))


def test_a_file_without_a_deploy_table_deploys_with_the_flags_defaults() -> None:
    declared = parse_unit_file("unit = 'a/b'\nversion = '1.0.0'\n[publish]\nimage = 'x'\n",
                               "u.toml", Path("."))
    assert build_deploy_request(declared.deploy) == build_deploy_request(
        DeployArgs(unit="a/b", version="1.0.0"))
