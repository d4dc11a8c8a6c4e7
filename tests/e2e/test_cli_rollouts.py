"""The `landlord` executable steering rollouts on a real cluster, under client load.

etcd, the installed coordinator and two real agents (Docker + HAProxy on 127.0.0.2-3),
the demo images, and a client per host entry point for the whole module so canary steps
are judged on real request logs. Every command runs `.venv/bin/landlord` as a subprocess
and the test reads its JSON (one document, or one per line while it follows a rollout),
its table output, its exit code and its one-line errors.

One unit, e2e/web, moves in file order:
  1.0.0 (first deploy) -> 1.1.0 (good canary, `deploy --wait` exits 0)
  -> 2.0.0 (bad canary rolls back by itself: `deploy --wait` and `rollout status --watch`
     exit 3) -> 1.2.0 (canary paused, resumed, promoted by hand)
  -> 2.0.0 (blue-green with manual promotion, aborted, retried, promoted)
  -> `rollback` to 1.2.0 -> `rollback --to 1.0.0`
  -> 1.1.0 (blue-green with an HTTP check and a canary switch);
then `rollout history` lists them all. Bad input comes first: unknown units, controls with
no active rollout, malformed versions, durations and flags (one line, no traceback, exit 1
or 2).
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from local_cluster.images import demo_image
from local_cluster.processes import free_port_on_all

from tests.e2e.real_cluster import RealCluster, host_id
from tests.e2e.real_load import Load, real_cluster, serving
from tests.e2e.test_cli_units import LANDLORD, Cli
from tests.support import eventually

HOSTS = {host_id("h1"): "127.0.0.2", host_id("h2"): "127.0.0.3"}
UNIT = "e2e/web"
REPLICAS = "2"
CANARY = ("--strategy", "canary", "--replicas", REPLICAS, "--steps", "50,100")
CRITERIA = ("--max-error-rate", "5%", "--min-requests", "20", "--inconclusive-deadline", "60s")

pytestmark = pytest.mark.timeout(420)


@dataclass
class Web:
    """e2e/web as the tests move it: its entry port and the rollouts started, in order."""

    port: int
    rollouts: list[str] = field(default_factory=list)


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def follow(cli: Cli, *args: str) -> subprocess.Popen[str]:
    """Start a command that follows a rollout; read it with ``finish``."""
    return subprocess.Popen(
        [str(LANDLORD), "--coordinator", cli.addresses, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli.env,
    )


def finish(proc: subprocess.Popen[str], code: int, timeout: float = 200) -> str:
    """Wait for a following command; it must exit with ``code`` and print no error."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"still following after {timeout}s: {out[-2000:]} {err}") from None
    assert proc.returncode == code, (proc.returncode, out[-3000:], err)
    assert err == "", err
    return out


def on_terminal(cli: Cli, *args: str, timeout: float = 60) -> tuple[int, str, str]:
    """Run a command on a pseudo-terminal of 160x40, as at a shell prompt; (code, out, err)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen(
        [str(LANDLORD), "--coordinator", cli.addresses, *args],
        stdin=follower,
        stdout=follower,
        stderr=subprocess.PIPE,
        env={**cli.env, "TERM": "xterm-256color"},
    )
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not select.select([leader], [], [], 0.5)[0]:
                continue
            try:
                data = os.read(leader, 65536)
            except OSError:  # EIO: every process of the terminal has gone
                break
            if not data:
                break
            chunks.append(data)
        _, err = proc.communicate(timeout=10)  # also closes the stderr pipe
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, b"".join(chunks).decode(errors="replace"), err.decode()


def status(cli: Cli) -> dict[str, Any]:
    info: dict[str, Any] = cli.json("rollout", "status", UNIT)
    return info


def wait_phase(cli: Cli, rollout_id: str, phase: str, timeout: float = 120) -> dict[str, Any]:
    def reached() -> dict[str, Any]:
        info = status(cli)
        assert info["rollout_id"] == rollout_id, info["rollout_id"]
        assert info["phase"] == phase, (info["phase"], info["reason"])
        return info

    found: dict[str, Any] = eventually(reached, timeout=timeout, interval=0.3,
                                       message=f"rollout {rollout_id} {phase}")
    return found


def running_versions(cli: Cli) -> set[str]:
    found = cli.json("instances", "list", "--unit", UNIT)["instances"]
    return {i["version"] for i in found if i["state"] == "INSTANCE_STATE_RUNNING"}


@pytest.fixture(scope="module")
def cluster() -> Iterator[RealCluster]:
    assert LANDLORD.exists(), f"{LANDLORD} is missing: install the project (make venv)"
    settings = {"heartbeat_interval": 2.0, "liveness_grace": 10.0, "stop_grace": 3.0}
    with real_cluster(settings=settings, hosts=HOSTS) as real:
        yield real


@pytest.fixture(scope="module")
def cli(cluster: RealCluster) -> Cli:
    cli = Cli(cluster.coordinator.address, cluster.cli_env())

    def all_alive() -> bool:
        hosts = cli.json("hosts", "list")["hosts"]
        return len([h for h in hosts if h["status"] == "alive"]) == len(HOSTS)

    eventually(all_alive, timeout=60, interval=0.5, message="both hosts alive")
    return cli


def publish(cli: Cli, unit: str, version: str, port: int, *extra: str) -> None:
    cli.json(
        "units", "publish", unit, version, "--image", demo_image(version),
        "--port", "0", "--service-port", str(port), "--health-path", "/healthz",
        "--health-interval", "1s", "--health-timeout", "1s", "--cpu", "100m",
        "--memory", "64Mi", *extra,
    )


@pytest.fixture(scope="module")
def web(cli: Cli) -> Iterator[Web]:
    """e2e/web 1.0.0 deployed on both hosts, every version published, clients running."""
    port = free_port_on_all(list(HOSTS.values()))
    publish(cli, UNIT, "1.0.0", port, "--feature", "first")
    publish(cli, UNIT, "1.1.0", port, "--feature", "faster")
    publish(cli, UNIT, "1.2.0", port, "--feature", "smaller")
    publish(cli, UNIT, "2.0.0", port, "--env", "ERROR_RATE=0.2", "--breaking", "new API")
    first = cli.run("deploy", UNIT, "1.0.0", "--building", "demo", "--replicas", REPLICAS,
                    "--wait", "--output", "json", timeout=120)
    assert first.returncode == 0, (first.stdout, first.stderr)
    updates = json_lines(first.stdout)
    info = updates[-1]  # a first deploy is a rollout too: followed until it is promoted
    assert (info["phase"], info["to_version"], info["from_version"]) == ("promoted", "1.0.0", "")
    assert {u["rollout_id"] for u in updates} == {info["rollout_id"]}
    assert [(w["version"], w["target_percent"]) for w in info["split"]] == [("1.0.0", 100.0)]
    eventually(lambda: running_versions(cli) == {"1.0.0"}, timeout=90, interval=0.5,
               message="1.0.0 running")
    eventually(lambda: serving(port, HOSTS.values()), timeout=60, interval=0.5,
               message="every entry point serves")
    load = Load(port, addresses=tuple(HOSTS.values())).start(max_seconds=400)
    try:
        yield Web(port, [info["rollout_id"]])
    finally:
        load.close()


# -- bad input -----------------------------------------------------------------------------


def test_rollout_commands_on_an_unknown_unit_fail_in_one_line(cli: Cli) -> None:
    for args in (
        ("rollout", "status", "e2e/nope"),
        ("rollout", "status", "e2e/nope", "--watch"),
        ("rollout", "history", "e2e/nope"),
        ("rollout", "retry", "e2e/nope"),
        ("rollback", "e2e/nope"),
        ("rollback", "e2e/nope", "--to", "1.0.0"),
        ("deploy", "e2e/nope", "1.0.0", *CANARY, "--wait"),
        *(("rollout", action, "e2e/nope") for action in ("promote", "abort", "pause", "resume")),
    ):
        line = cli.fails(1, *args)
        assert ": NOT_FOUND: " in line and "e2e/nope" in line, (args, line)


def test_controls_without_an_active_rollout_are_refused(cli: Cli, web: Web) -> None:
    for action in ("promote", "abort", "pause", "resume"):
        line = cli.fails(1, "rollout", action, UNIT)
        assert line == (
            f"landlord: error: {action} rollout of {UNIT}: FAILED_PRECONDITION: "
            f"{UNIT} has no active rollout to {action}"
        )
    line = cli.fails(1, "rollout", "retry", UNIT)
    assert "FAILED_PRECONDITION" in line and "nothing to retry" in line
    # the first deploy has no earlier version to go back to
    line = cli.fails(1, "rollback", UNIT)
    assert "FAILED_PRECONDITION" in line and "no previous stable version" in line
    line = cli.fails(1, "deploy", UNIT, "9.9.9", *CANARY)
    assert line.endswith(
        "FAILED_PRECONDITION: e2e/web 9.9.9 is not published (published: 1.0.0, 1.1.0, "
        "1.2.0, 2.0.0)"
    )
    line = cli.fails(1, "deploy", UNIT, "1.0.0", *CANARY)
    assert "FAILED_PRECONDITION" in line and "already runs 1.0.0" in line


def test_malformed_versions_durations_and_flags_are_refused_before_any_call(cli: Cli) -> None:
    cases = {
        ("deploy", UNIT, "v1.2"): "version: 'v1.2' is not a semantic version",
        ("rollback", UNIT, "--to", "1.x"): "--to: '1.x' is not a semantic version",
        ("deploy", UNIT, "1.2.0", *CANARY, "--monitor", "soon"): "--monitor: 'soon' is not a",
        ("deploy", UNIT, "1.2.0", *CANARY, "--step-delay", "5"): "(a unit is required)",
        ("deploy", UNIT, "1.2.0", *CANARY, "--max-p95", "-1s"): "--max-p95: '-1s' is not a",
        ("deploy", UNIT, "1.2.0", "--cleanup-delay", "1x"): "--cleanup-delay: '1x' is not a",
        ("deploy", UNIT, "1.2.0", "--strategy", "rainbow"): "--strategy: 'rainbow' is not one",
        ("deploy", UNIT, "1.2.0", "--switch", "sideways"): "--switch: 'sideways' is not one",
        ("deploy", UNIT, "1.2.0", "--strategy", "canary", "--steps", "50,25"): "must increase",
        ("deploy", UNIT, "1.2.0", *CANARY, "--max-error-rate", "150%"): "not a rate",
        ("deploy", UNIT, "1.2.0", *CANARY, "--min-rps", "-1"): "--min-rps: must be >= 0",
        ("deploy", UNIT, "1.2.0", *CANARY, "--switch", "gradual"): "blue-green only",
        ("deploy", UNIT, "1.2.0", "--monitor", "3s"): "--monitor: needs --strategy canary",
        ("deploy", UNIT, "1.2.0", *CANARY, "--step-delay", "0s"): "--step-delay: must be more",
        ("deploy", UNIT, "1.2.0", *CANARY, "--max-error-rate", "0"): "must be more than 0",
        ("rollout", "status", "web"): "'web' is not APARTMENT/UNIT",
        ("rollout", "history", UNIT, "--limit", "0"): "--limit: must be at least 1",
    }
    for args, expected in cases.items():
        line = cli.fails(2, *args)
        assert expected in line, (args, line)


# -- rollouts ------------------------------------------------------------------------------


def test_good_canary_is_promoted_and_deploy_wait_exits_0(cli: Cli, web: Web) -> None:
    result = cli.run(
        "deploy", UNIT, "1.1.0", *CANARY, "--monitor", "3s", "--step-delay", "1s", *CRITERIA,
        "--max-p95", "2s", "--min-rps", "1", "--wait", "--output", "json", timeout=240,
    )
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr)
    assert result.stderr == ""
    updates = json_lines(result.stdout)
    rollout_id = updates[0]["rollout_id"]
    web.rollouts.append(rollout_id)
    assert {u["rollout_id"] for u in updates} == {rollout_id}
    assert [u["phase"] for u in updates].count("promoted") == 1
    last = updates[-1]
    assert (last["phase"], last["from_version"], last["to_version"]) == (
        "promoted", "1.0.0", "1.1.0")
    assert last["strategy"] == "STRATEGY_CANARY"
    assert [(s["target_percent"], s["outcome"]) for s in last["steps"]] == [
        (50, "passed"), (100, "passed")]
    assert all(s["canary"]["requests"] >= 20 for s in last["steps"]), last["steps"]
    assert last["canary"]["monitor"] == "3s" and last["canary"]["step_delay"] == "1s"
    assert last["criteria"] == {"max_error_rate": 0.05, "max_latency_p95": "2s",
                                "min_throughput_rps": 1.0, "min_requests": 20}
    assert any(u["phase"] == "switching" for u in updates)

    # `rollout status` afterwards: the same rollout, as JSON and as a table for people
    shown = status(cli)
    assert (shown["rollout_id"], shown["phase"]) == (rollout_id, "promoted")
    table = cli.run("rollout", "status", UNIT)
    assert table.returncode == 0, table.stderr
    for expected in (rollout_id, "1.0.0 -> 1.1.0", "promoted", "canary", "error rate",
                     "<= 5.00%", "instances by host"):
        assert expected in table.stdout, (expected, table.stdout)
    eventually(lambda: running_versions(cli) == {"1.1.0"}, timeout=60, interval=0.5)


def test_bad_canary_rolls_back_and_both_followers_exit_3(cli: Cli, web: Web) -> None:
    deploying = follow(cli, "deploy", UNIT, "2.0.0", *CANARY, "--monitor", "3s",
                       "--step-delay", "1s", *CRITERIA, "--wait")
    def begun() -> dict[str, Any]:
        info = status(cli)
        assert info["to_version"] == "2.0.0", info["to_version"]
        return info

    started = eventually(begun, timeout=30, interval=0.2, message="the 2.0.0 rollout exists")
    rollout_id = started["rollout_id"]
    web.rollouts.append(rollout_id)
    watched = cli.run("rollout", "status", UNIT, "--watch", "--output", "json", timeout=240)
    assert watched.returncode == 3, (watched.stdout[-3000:], watched.stderr)
    assert watched.stderr == ""
    updates = json_lines(watched.stdout)
    assert {u["rollout_id"] for u in updates} == {rollout_id}
    assert [u["phase"] for u in updates][-1] == "rolled_back"
    assert all(u["phase"] != "rolled_back" for u in updates[:-1])
    failed = updates[-1]["steps"][-1]
    assert (failed["target_percent"], failed["outcome"]) == (50, "failed"), failed
    assert any("error rate" in reason for reason in failed["reasons"]), failed

    # deploy --wait in table form: a summary line per update, then the final view
    out = finish(deploying, 3)
    lines = out.splitlines()
    assert lines[0].startswith(f"{UNIT}  1.1.0 -> 2.0.0  "), lines[0]
    assert "rolled_back" in out and "error rate" in out and "fail" in out
    steps = {part for line in lines for part in line.split("  ")
             if re.fullmatch(r"step \d+/\d+", part)}
    assert steps == {"step 1/2"}, steps  # counted over the whole rollout, not the steps begun
    assert f"rollout   {rollout_id}" in out or rollout_id in out
    eventually(lambda: running_versions(cli) == {"1.1.0"}, timeout=60, interval=0.5)


def test_pause_resume_and_promote_a_canary_by_hand(cli: Cli, web: Web) -> None:
    started = cli.json("deploy", UNIT, "1.2.0", *CANARY, "--monitor", "5m",
                       "--step-delay", "1s", *CRITERIA)["rollout"]
    rollout_id = started["rollout_id"]
    web.rollouts.append(rollout_id)
    assert (started["from_version"], started["to_version"]) == ("1.1.0", "1.2.0")
    assert started["canary"]["monitor"] == "300s"
    wait_phase(cli, rollout_id, "switching")

    # `rollout status` of the running canary: the split and p95 measured live, and the
    # criteria checked against them (the step is judged only after its 5 minutes)
    def measured() -> dict[str, Any]:
        info = status(cli)
        assert info["measured_live"] and info["total_steps"] == 2, info
        split = {w["version"]: w for w in info["split"]}
        assert [split[v]["target_percent"] for v in ("1.1.0", "1.2.0")] == [50.0, 50.0], split
        # measured, not "no data" (HAProxy times in whole ms: a loopback p95 can be 0 ms)
        assert all(split[v].get("p95_ms", -1) >= 0 for v in ("1.1.0", "1.2.0")), split
        assert 10 <= split["1.2.0"].get("measured_percent", 0) <= 90, split
        latency = next(c for c in info["checks"] if c["name"] == "latency_p95_ms")
        assert latency["verdict"] == "pass", info["checks"]
        assert {h["host_id"] for h in info["hosts"]} == set(HOSTS), info["hosts"]
        return info

    shown = eventually(measured, timeout=60, interval=0.5, message="live figures")
    split = {w["version"]: w for w in shown["split"]}
    latency = next(c for c in shown["checks"] if c["name"] == "latency_p95_ms")
    assert latency["measured"] == split["1.2.0"]["p95_ms"] and latency["threshold"] == 500.0
    table = cli.run("rollout", "status", UNIT)
    assert table.returncode == 0, table.stderr
    assert "measured: live since" in table.stdout and "1 of 2 (50%)" in table.stdout
    assert "traffic by host" in table.stdout
    row = next(line for line in table.stdout.splitlines() if line.startswith("latency p95"))
    assert "no data" not in row and row.count("ms") == 2, row  # threshold and measured

    paused = cli.json("rollout", "pause", UNIT)
    assert paused["rollout_id"] == rollout_id
    shown = wait_phase(cli, rollout_id, "paused")
    assert shown["current_step"] == 0
    assert cli.json("rollout", "pause", UNIT)["rollout_id"] == rollout_id  # already paused
    # while it is paused: no second rollout, nothing to retry
    line = cli.fails(1, "deploy", UNIT, "2.0.0", *CANARY)
    assert UNIT in line and "active rollout" in line, line
    line = cli.fails(1, "rollout", "retry", UNIT)
    assert "FAILED_PRECONDITION" in line and "only an ended one can be retried" in line
    # Ctrl-C stops a watch of a rollout that is not going anywhere, without a traceback
    watching = follow(cli, "rollout", "status", UNIT, "--watch", "--output", "json")
    assert watching.stdout is not None
    assert json.loads(watching.stdout.readline())["phase"] == "paused"
    watching.send_signal(signal.SIGINT)
    _, err = watching.communicate(timeout=20)
    assert watching.returncode in (1, 130), (watching.returncode, err)
    assert "Traceback" not in err and err.count("\n") <= 1, err

    cli.json("rollout", "resume", UNIT)
    wait_phase(cli, rollout_id, "switching")
    line = cli.fails(1, "rollout", "resume", UNIT)
    assert line.endswith(f"rollout {rollout_id} of {UNIT} is not paused")

    promoted = cli.run("rollout", "promote", UNIT)  # table form: one summary line
    assert promoted.returncode == 0, promoted.stderr
    assert promoted.stdout.startswith(f"{UNIT}  1.1.0 -> 1.2.0  "), promoted.stdout
    watched = cli.run("rollout", "status", UNIT, "--watch", timeout=120)  # piped: JSON lines
    assert watched.returncode == 0, (watched.stdout[-3000:], watched.stderr)
    last = json_lines(watched.stdout)[-1]
    assert last["phase"] == "promoted", last["phase"]
    assert "promoted by request" in last["steps"][0]["reasons"], last["steps"]
    final = status(cli)
    assert (final["rollout_id"], final["phase"]) == (rollout_id, "promoted")
    assert final["steps"][0]["outcome"] == "skipped"
    eventually(lambda: running_versions(cli) == {"1.2.0"}, timeout=60, interval=0.5)


def test_abort_retry_and_manual_promotion_of_a_blue_green(cli: Cli, web: Web) -> None:
    started = cli.json("deploy", UNIT, "2.0.0", "--replicas", REPLICAS, "--switch",
                       "immediate", "--warmup", "1s", "--cleanup-delay", "1s",
                       "--manual-promotion")["rollout"]
    rollout_id = started["rollout_id"]
    web.rollouts.append(rollout_id)
    assert started["strategy"] == "STRATEGY_BLUE_GREEN"
    assert started["blue_green"]["manual_promotion"] is True
    watching = follow(cli, "rollout", "status", UNIT, "--watch", "--output", "json")
    wait_phase(cli, rollout_id, "awaiting_promotion")
    aborted = cli.json("rollout", "abort", UNIT)
    assert aborted["rollout_id"] == rollout_id
    updates = json_lines(finish(watching, 3))
    assert updates[-1]["rollout_id"] == rollout_id
    assert updates[-1]["phase"] == "aborted" and "aborted by request" in updates[-1]["reason"]
    assert "awaiting_promotion" in [u["phase"] for u in updates]
    eventually(lambda: running_versions(cli) == {"1.2.0"}, timeout=60, interval=0.5)
    line = cli.fails(1, "rollout", "abort", UNIT)
    assert line.endswith(f"{UNIT} has no active rollout to abort")

    retried = cli.json("rollout", "retry", UNIT)
    retry_id = retried["rollout_id"]
    web.rollouts.append(retry_id)
    assert retry_id != rollout_id
    assert (retried["from_version"], retried["to_version"]) == ("1.2.0", "2.0.0")
    assert retried["blue_green"]["manual_promotion"] is True
    wait_phase(cli, retry_id, "awaiting_promotion")
    assert cli.json("rollout", "promote", UNIT)["rollout_id"] == retry_id
    watched = cli.run("rollout", "status", UNIT, "--watch", "--output", "json", timeout=120)
    assert watched.returncode == 0, (watched.stdout[-3000:], watched.stderr)
    assert json_lines(watched.stdout)[-1]["phase"] == "promoted"
    eventually(lambda: running_versions(cli) == {"2.0.0"}, timeout=60, interval=0.5)


def test_rollback_to_the_previous_and_to_a_named_version(cli: Cli, web: Web) -> None:
    back = cli.run("rollback", UNIT, "--wait", "--output", "json", timeout=150)
    assert back.returncode == 0, (back.stdout[-3000:], back.stderr)
    last = json_lines(back.stdout)[-1]
    web.rollouts.append(last["rollout_id"])
    assert (last["phase"], last["from_version"], last["to_version"]) == (
        "promoted", "2.0.0", "1.2.0")
    eventually(lambda: running_versions(cli) == {"1.2.0"}, timeout=60, interval=0.5)

    started = cli.json("rollback", UNIT, "--to", "1.0.0")
    web.rollouts.append(started["rollout_id"])
    assert (started["from_version"], started["to_version"]) == ("1.2.0", "1.0.0")
    # asked for table: a summary line per update, then the final view (piped or not)
    watched = cli.run("rollout", "status", UNIT, "--watch", "-o", "table", timeout=150)
    assert watched.returncode == 0, (watched.stdout[-3000:], watched.stderr)
    assert f"{UNIT}  1.2.0 -> 1.0.0  promoted" in watched.stdout
    eventually(lambda: running_versions(cli) == {"1.0.0"}, timeout=60, interval=0.5)
    line = cli.fails(1, "rollback", UNIT, "--to", "1.0.0")
    assert "FAILED_PRECONDITION" in line and "already runs 1.0.0" in line
    line = cli.fails(1, "rollback", UNIT, "--to", "3.0.0")
    assert line.endswith(f"NOT_FOUND: {UNIT} has no version 3.0.0")


def test_blue_green_with_checks_and_a_canary_switch_is_promoted(cli: Cli, web: Web) -> None:
    result = cli.run(
        "deploy", UNIT, "1.1.0", "--replicas", REPLICAS, "--switch", "canary", "--steps",
        "50,100", "--monitor", "2s", "--step-delay", "1s", *CRITERIA, "--warmup", "1s",
        "--cleanup-delay", "1s", "--check-http", "/healthz", "--max-p95", "2s", "--wait",
        timeout=240,
    )
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr)
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{UNIT}  1.0.0 -> 1.1.0  "), lines[0]
    assert any("  validating" in line for line in lines), result.stdout
    assert "blue-green (switch canary)" in result.stdout and "promoted" in result.stdout
    shown = status(cli)
    web.rollouts.append(shown["rollout_id"])
    assert (shown["phase"], shown["strategy"]) == ("promoted", "STRATEGY_BLUE_GREEN")
    assert shown["blue_green"]["switch_mode"] == "SWITCH_MODE_CANARY"
    assert [(s["target_percent"], s["outcome"]) for s in shown["steps"]] == [
        (50, "passed"), (100, "passed")]
    eventually(lambda: running_versions(cli) == {"1.1.0"}, timeout=60, interval=0.5)


def test_history_lists_every_rollout_newest_first(cli: Cli, web: Web) -> None:
    listed = cli.json("rollout", "history", UNIT)["rollouts"]
    assert [r["rollout_id"] for r in listed] == list(reversed(web.rollouts))
    assert [(r["from_version"], r["to_version"], r["phase"]) for r in listed] == [
        ("1.0.0", "1.1.0", "promoted"),
        ("1.2.0", "1.0.0", "promoted"),
        ("2.0.0", "1.2.0", "promoted"),
        ("1.2.0", "2.0.0", "promoted"),
        ("1.2.0", "2.0.0", "aborted"),
        ("1.1.0", "1.2.0", "promoted"),
        ("1.1.0", "2.0.0", "rolled_back"),
        ("1.0.0", "1.1.0", "promoted"),
        ("", "1.0.0", "promoted"),
    ]
    newest = cli.json("rollout", "history", UNIT, "--limit", "2")["rollouts"]
    assert [r["rollout_id"] for r in newest] == list(reversed(web.rollouts))[:2]
    # a past rollout by id
    bad = cli.json("rollout", "status", UNIT, "--id", web.rollouts[2])
    assert (bad["phase"], bad["to_version"]) == ("rolled_back", "2.0.0")
    line = cli.fails(1, "rollout", "status", UNIT, "--id", "r-nope")
    assert line.endswith(f"NOT_FOUND: no rollout r-nope of {UNIT}")
    # watching an ended rollout on a terminal draws its final view and exits by its outcome
    code, out, err = on_terminal(cli, "rollout", "status", UNIT, "--watch", "--id",
                                 web.rollouts[2])
    assert (code, err) == (3, ""), (code, out, err)
    assert "rolled_back" in out and "1.1.0 -> 2.0.0" in out and "error rate" in out, out
    table = cli.run("rollout", "history", UNIT)
    assert table.returncode == 0, table.stderr
    assert all(rollout_id in table.stdout for rollout_id in web.rollouts)
    for phase in ("promoted", "rolled_back", "aborted"):
        assert phase in table.stdout
