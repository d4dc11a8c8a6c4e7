#!/usr/bin/env python3
"""`make demo`: the main job.

What runs today (and nothing is claimed beyond it):
  1. services and images are set up by `make setup` before this script runs;
  2. the demo workload is started as real containers on three simulated hosts
     (127.0.0.2-4, host networking), one version per host, with the state
     directory carried across a version change on one host;
  3. each instance is queried over loopback and the answers are printed.

The multi-host rollout itself (coordinator, agents, canary and blue-green
with automatic rollback) is built by the open issues 4-8; until they land,
this script says so instead of pretending.

`scripts/demo.py --down` removes everything the demo started.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import docker
from docker.errors import DockerException, NotFound

DEMO_LABEL = "landlord.demo"
HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
PORT = 18080


def get_json(url: str, timeout: float = 2.0) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def wait_healthy(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if get_json(url)[0] == 200:
                return
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: {url} did not become healthy within {timeout:.0f}s")
        time.sleep(0.1)


def down(client: docker.DockerClient) -> int:
    removed = 0
    for c in client.containers.list(all=True, filters={"label": DEMO_LABEL}):
        c.remove(force=True)
        removed += 1
    print(f"demo: removed {removed} demo container(s)")
    return 0


def run_instance(
    client: docker.DockerClient, version: str, host: str, state_dir: Path, env: dict[str, str]
) -> str:
    name = f"landlord-demo-{host.replace('.', '-')}"
    with contextlib.suppress(NotFound):
        client.containers.get(name).remove(force=True)
    container = client.containers.run(
        f"landlord/demo-app:{version}",
        name=name,
        detach=True,
        network_mode="host",
        environment={"PORT": str(PORT), "BIND": host, "STATE_DIR": "/state", **env},
        volumes={str(state_dir): {"bind": "/state", "mode": "rw"}},
        labels={DEMO_LABEL: "1"},
    )
    wait_healthy(f"http://{host}:{PORT}/healthz")
    return str(container.short_id)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--down", action="store_true", help="remove what the demo started")
    args = parser.parse_args()
    try:
        client = docker.from_env(timeout=30)
    except DockerException as err:
        print(f"demo: Docker is not reachable ({err}); run `make setup` first", file=sys.stderr)
        return 1
    if args.down:
        return down(client)

    state_root = Path(tempfile.mkdtemp(prefix="landlord-demo-"))
    print("demo: starting the demo workload on three simulated hosts (loopback)")
    for host, version in zip(HOSTS, ["1.0.0", "1.1.0", "2.0.0"], strict=True):
        state = state_root / host
        state.mkdir()
        env = {"ERROR_RATE": "0.2"} if version == "2.0.0" else {}
        cid = run_instance(client, version, host, state, env)
        codes = [get_json(f"http://{host}:{PORT}/")[0] for _ in range(50)]
        errors = sum(1 for c in codes if c >= 500)
        status, _ = get_json(f"http://{host}:{PORT}/healthz")
        print(
            f"  {host}:{PORT}  container {cid}  version {version}: "
            f"50 requests, {errors} answered 500 (healthz {status})"
        )

    host = HOSTS[0]
    before = get_json(f"http://{host}:{PORT}/")[1].get("count")
    run_instance(client, "1.1.0", host, state_root / host, {})
    after = get_json(f"http://{host}:{PORT}/")[1]
    print(
        f"demo: replaced {host}'s 1.0.0 container with 1.1.0 on the same state dir: "
        f"request counter {before} -> {after.get('count')} (version {after.get('version')})"
    )
    print()
    print("demo: NOT THERE YET: the coordinator, agents, HAProxy data plane and the")
    print("      canary / blue-green rollout with automatic rollback are open issues;")
    print("      this demo shows only the workload and the images they will run.")
    print("demo: containers are left running; stop everything with `make down`.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
