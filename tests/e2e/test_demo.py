"""`scripts/demo.py` end to end: the demo's own claims checked against what really runs.

Runs the demo as a subprocess (LANDLORD_DEMO_FAST=1 for shorter canary steps, its own run
directory), parses its ``DEMO-SUMMARY`` JSON line, checks the outcome of every rollout and
the failure split, asks every host's entry point itself, then runs ``--down`` and checks
that no demo process, HAProxy or container remains.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import docker
import psutil
import pytest
from local_cluster.images import DEMO_REGISTRY
from local_cluster.load import get_json

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "scripts" / "demo.py"
LANDLORD = Path(sys.executable).parent / "landlord"
HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
LABEL = "landlord.demo=1"
# the demo's own run directory (a running demo is replaced, as by a second `make demo`)
RUN_DIR = Path(os.environ.get("LANDLORD_DEMO_DIR") or Path(
    os.environ.get("LANDLORD_RUN_DIR") or ROOT / ".run") / "demo")

pytestmark = pytest.mark.timeout(240)


def _down(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(DEMO), "--down"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=90, check=False)


def _demo_processes(run_dir: Path) -> list[psutil.Process]:
    """Live processes whose command line or environment points into the demo's run dir."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            text = " ".join(proc.cmdline())
            if str(run_dir) in text or (
                "landlord-agent" in text
                and str(run_dir) in proc.environ().get("LANDLORD_AGENT_DATA_DIR", "")
            ):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _containers() -> list[str]:
    client = docker.from_env(timeout=60)
    try:
        return [c.name for c in client.containers.list(all=True, filters={"label": LABEL})]
    finally:
        client.close()


def _repo_digest(image: str) -> str:
    """``REGISTRY/landlord/demo-app@sha256:...`` of a local image pushed to the registry."""
    client = docker.from_env(timeout=60)
    try:
        digests = client.images.get(image).attrs["RepoDigests"]
    finally:
        client.close()
    return str(next(d for d in digests if d.startswith(f"{DEMO_REGISTRY}/")))


def _running_images() -> set[str]:
    """The image references the demo's running containers were created from."""
    client = docker.from_env(timeout=60)
    try:
        return {c.attrs["Config"]["Image"]
                for c in client.containers.list(filters={"label": LABEL})}
    finally:
        client.close()


def _metrics_urls(stdout: str) -> dict[str, list[str]]:
    """The printed ``curl http://.../metrics     # <what> ...`` lines: what -> URLs."""
    found: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        if "curl http" in line and "/metrics" in line:
            url, comment = line.split("curl ")[1].split("#", 1)
            found.setdefault(comment.split()[0], []).append(url.strip())
    return found


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as reply:
        assert reply.status == 200, url
        return str(reply.read().decode())


@pytest.fixture
def demo_env() -> Iterator[dict[str, str]]:
    env = {**os.environ, "LANDLORD_DEMO_FAST": "1"}
    yield env
    _down(env)  # whatever happened, nothing stays behind


def test_demo_runs_three_rollouts_and_tells_the_truth(demo_env: dict[str, str]) -> None:
    run_dir = RUN_DIR
    done = subprocess.run([sys.executable, str(DEMO)], env=demo_env, cwd=ROOT,
                          capture_output=True, text=True, timeout=200, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("DEMO-SUMMARY ")]
    assert len(lines) == 1, done.stdout[-3000:]
    summary = json.loads(lines[0].removeprefix("DEMO-SUMMARY "))

    phases = summary["phases"]
    assert [(p["to_version"], p["phase"]) for p in phases] == [
        ("1.1.0", "promoted"), ("2.0.0", "rolled_back"), ("1.2.0", "promoted")]
    assert [p["cli_exit"] for p in phases] == [0, 3, 0]
    assert [p["strategy"] for p in phases] == ["canary", "canary", "blue-green"]
    good, bad, blue_green = phases
    assert all(s["outcome"] == "passed" for s in good["steps"]), good["steps"]
    assert good["steps"][-1]["target_percent"] == 100
    assert bad["steps"][-1]["outcome"] == "failed"
    assert bad["rollback_seconds"] is not None and bad["rollback_seconds"] >= 0
    assert blue_green["switch_seconds"] is not None
    assert isinstance(summary["workarounds"], list)  # said plainly when one was needed
    # the failure split adds up, nothing was lost by switching, 2.0.0 did answer some 500s
    assert summary["failed_requests"] == (summary["failed_bad_version_5xx"]
                                          + summary["failed_switching"])
    assert summary["failed_switching"] == 0, summary
    assert summary["failed_bad_version_5xx"] > 0
    assert good["failures"]["total"] == 0 and blue_green["failures"]["total"] == 0
    assert summary["total_requests"] >= sum(p["requests"] for p in phases) > 300
    measured = [s["measured_percent"] for s in good["steps"]]
    assert all(m is not None for m in measured) and measured[-1] > 90, measured
    assert summary["final_version"] == "1.2.0"
    # everyday operations under the same load: scale up and down, a host drained; the
    # summary's zero switching failures above covers them, and each says so on its own
    operations = summary["operations"]
    assert [o["name"].split(" ")[0] for o in operations] == ["scale", "scale", "drain"]
    assert all(o["failed"] == 0 and o["requests"] > 20 for o in operations), operations
    assert "== drain host " in done.stdout
    assert "export LANDLORD_COORDINATOR=127.0.0.1:" in done.stdout
    # the printed shell lines let the CLI in as the demo's admin; without them it is refused
    exports = dict(line.strip().removeprefix("export ").split("=", 1)
                   for line in done.stdout.splitlines() if line.strip().startswith("export "))
    assert set(exports) == {"LANDLORD_COORDINATOR", "LANDLORD_TLS_CA", "LANDLORD_TLS_CERT",
                            "LANDLORD_TLS_KEY"}, exports
    bare = {k: v for k, v in os.environ.items() if not k.startswith("LANDLORD_")}
    hosts = subprocess.run([str(LANDLORD), "hosts", "list", "--output", "json"],
                           env={**bare, **exports}, capture_output=True, text=True, timeout=60,
                           check=False)
    assert hosts.returncode == 0, hosts.stderr
    assert len(json.loads(hosts.stdout)["hosts"]) == 3
    refused = subprocess.run([str(LANDLORD), "hosts", "list"], capture_output=True, text=True,
                             env={**bare, "LANDLORD_COORDINATOR": exports["LANDLORD_COORDINATOR"]},
                             timeout=60, check=False)
    assert refused.returncode != 0 and "no client certificate" in refused.stderr, refused.stderr

    # the printed metrics endpoints answer: the coordinator leads, every agent is healthy,
    # every host's HAProxy exports its own figures, among them the unit's servers
    scrapes = _metrics_urls(done.stdout)
    assert [len(scrapes[k]) for k in ("coordinator", "agent", "HAProxy")] == [1, 3, 3], scrapes
    assert "landlord_coordinator_leader 1.0" in _scrape(scrapes["coordinator"][0])
    for agent in scrapes["agent"]:
        assert "landlord_agent_stream_connected 1.0" in _scrape(agent)
        with urllib.request.urlopen(agent.replace("/metrics", "/healthz"), timeout=10) as reply:
            assert reply.status == 200
    for haproxy in scrapes["HAProxy"]:
        text = _scrape(haproxy)
        assert "haproxy_process_uptime_seconds" in text, text[:500]
        assert 'haproxy_server_weight{proxy="be.' in text, text[:2000]

    # the printed web view answers, and its JSON lists the demo's rollout
    view = [line.strip() for line in done.stdout.splitlines() if line.strip().endswith("/ui/")]
    assert len(view) == 1, done.stdout[-3000:]
    with urllib.request.urlopen(view[0], timeout=10) as reply:
        assert "Landlord rollouts" in reply.read().decode()
    with urllib.request.urlopen(view[0].replace("/ui/", "/api/v1/rollouts"), timeout=10) as reply:
        assert json.loads(reply.read())["rollouts"], "no rollout in the web view's JSON"

    port = int(done.stdout.split("(http://127.0.0.{2,3,4}:")[1].split("/")[0])
    for host in HOSTS:
        status, found = get_json(host, port)
        assert status == 200 and found["version"] == "1.2.0"
    assert len(_containers()) >= 3 and _demo_processes(run_dir)
    # published from the local registry: containers run their image by digest (1.1.0's
    # may still be draining), the final version's among them
    images = _running_images()
    assert all(i.startswith(f"{DEMO_REGISTRY}/landlord/demo-app@sha256:") for i in images), images
    assert _repo_digest("landlord/demo-app:1.2.0") in images

    stopped = _down(demo_env)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "coordinator" in stopped.stdout
    assert not _containers()
    assert not _demo_processes(run_dir)
    again = _down(demo_env)
    assert again.returncode == 0 and "nothing was running" in again.stdout
