"""The `landlord` executable against a real coordinator and etcd: units and bad input.

Each test runs `.venv/bin/landlord` as a subprocess, the way an operator does, and reads
its JSON output, exit code and stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import Cluster
from tests.support import eventually

LANDLORD = Path(sys.executable).parent / "landlord"


class Cli:
    """Runs the installed `landlord` against one or more coordinator addresses."""

    def __init__(self, addresses: str, tls_env: Mapping[str, str] | None = None) -> None:
        """``tls_env``: LANDLORD_TLS_* of the identity to call as (the cluster's admin)."""
        self.addresses = addresses
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LANDLORD_")}
        self.env.update(tls_env or {})

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(LANDLORD), "--coordinator", self.addresses, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            check=False,
        )

    def json(self, *args: str) -> Any:
        result = self.run(*args, "--output", "json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def fails(self, code: int, *args: str) -> str:
        """Run a command that must fail with ``code``; return its one-line error."""
        result = self.run(*args)
        assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
        assert result.stdout == ""
        assert result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith("landlord: error: "), result.stderr
        assert "Traceback" not in result.stderr
        return result.stderr.strip()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    assert LANDLORD.exists(), f"{LANDLORD} is missing: install the project (make venv)"
    cluster = Cluster()
    try:
        cluster.start_etcd()
        cluster.add_coordinator()
        cluster.leader()
        # publishing checks that the image is present on a host: one simulated host has it
        cluster.add_agent("h1", "127.0.0.2", building="shop-edge", memory_bytes=8 << 30)
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def cli(cluster: Cluster) -> Cli:
    cli = Cli(cluster.leader().address, cluster.cli_env())
    eventually(lambda: cli.json("hosts", "list")["hosts"], timeout=30, message="h1 registered")
    return cli


@pytest.fixture(scope="module")
def published(cli: Cli) -> dict[str, Any]:
    """shop/db 1.0.0 and 1.1.0, shop/cart 1.0.0 depending on db@^1.0.0."""
    db1 = cli.json(
        "units",
        "publish",
        "shop/db",
        "1.0.0",
        "--image",
        "demo:1",
        "--port",
        "0",
        "--health-path",
        "/health",
        "--cpu",
        "250m",
        "--memory",
        "64Mi",
        "--feature",
        "first release",
    )
    db2 = cli.json(
        "units",
        "publish",
        "shop/db",
        "1.1.0",
        "--image",
        "demo:1",
        "--cpu",
        "250m",
        "--memory",
        "64Mi",
        "--feature",
        "faster queries",
    )
    cart = cli.json(
        "units",
        "publish",
        "shop/cart",
        "1.0.0",
        "--image",
        "demo:1",
        "--env",
        "MODE=test",
        "--dep",
        "db@^1.0.0",
        "--cpu",
        "0.5",
        "--memory",
        "128Mi",
        "--network",
        "10Mbit",
        "--state-mode",
        "none",
        "--breaking",
        "new API",
    )
    return {"db1": db1, "db2": db2, "cart": cart}


def test_publish_prints_the_version_as_json(published: dict[str, Any]) -> None:
    cart = published["cart"]
    assert cart["already_published"] is False
    version = cart["version"]
    assert (version["apartment"], version["unit"], version["version"]) == ("shop", "cart", "1.0.0")
    assert len(version["checksum"]) == 64
    spec = version["spec"]
    assert spec["image"] == "demo:1"
    assert spec["env"] == {"MODE": "test"}
    assert spec["dependencies"] == ["db@^1.0.0"]
    assert spec["resources"] == {
        "cpu_millis": 500,
        "memory_bytes": 128 * 2**20,
        "storage_bytes": 0,
        "network_bps": 10_000_000,
    }
    assert version["changes"]["breaking"] == ["new API"]


def test_publishing_the_same_content_again_is_idempotent(cli: Cli, published: Any) -> None:
    again = cli.json(
        "units",
        "publish",
        "shop/db",
        "1.1.0",
        "--image",
        "demo:1",
        "--cpu",
        "250m",
        "--memory",
        "64Mi",
        "--feature",
        "faster queries",
    )
    assert again["already_published"] is True
    assert again["version"]["checksum"] == published["db2"]["version"]["checksum"]


def test_units_list_show_and_versions(cli: Cli, published: Any) -> None:
    units = cli.json("units", "list")["units"]
    names = {f"{u['apartment']}/{u['unit']}": u for u in units}
    assert {"shop/db", "shop/cart"} <= set(names)
    assert names["shop/db"]["latest_version"] == "1.1.0"

    only_shop = cli.json("units", "list", "--apartment", "shop")["units"]
    assert {u["apartment"] for u in only_shop} == {"shop"}

    shown = cli.json("units", "show", "shop/cart")
    assert shown["unit"]["unit"] == "cart"
    assert shown["latest"]["version"] == "1.0.0"
    assert shown["instances"] == []

    versions = cli.json("units", "versions", "shop/db")["versions"]
    assert sorted(v["version"] for v in versions) == ["1.0.0", "1.1.0"]


def test_table_output_for_people(cli: Cli, published: Any) -> None:
    listing = cli.run("units", "list")
    assert listing.returncode == 0, listing.stderr
    assert "shop/cart" in listing.stdout and "shop/db" in listing.stdout
    shown = cli.run("units", "show", "shop/cart")
    assert shown.returncode == 0, shown.stderr
    assert "db@^1.0.0" in shown.stdout


def test_resolve_picks_the_highest_satisfying_version(cli: Cli, published: Any) -> None:
    resolved = cli.json("units", "resolve", "shop/cart@1.0.0")["resolved"]
    assert [(d["unit"], d["version"]) for d in resolved] == [("shop/db", "1.1.0")]
    assert resolved[0]["range"] == "^1.0.0"
    tree = cli.run("units", "resolve", "shop/cart@1.0.0")
    assert tree.returncode == 0, tree.stderr
    assert tree.stdout.splitlines()[0] == "shop/cart@1.0.0"
    assert "shop/db@1.1.0" in tree.stdout


def test_unknown_unit_is_a_not_found_one_liner(cli: Cli, published: Any) -> None:
    line = cli.fails(1, "units", "show", "shop/nope")
    assert line.startswith("landlord: error: show shop/nope: NOT_FOUND: ")
    assert "shop/nope" in line.removeprefix("landlord: error: show shop/nope")
    cli.fails(1, "units", "versions", "shop/nope")
    cli.fails(1, "units", "resolve", "shop/nope@1.0.0")


def test_malformed_version_and_bad_range_are_refused(cli: Cli) -> None:
    line = cli.fails(2, "units", "publish", "shop/x", "v1.0", "--image", "demo:1")
    assert "'v1.0' is not a semantic version" in line
    line = cli.fails(
        2, "units", "publish", "shop/x", "1.0.0", "--image", "demo:1", "--dep", "db@>>1"
    )
    assert "is not an npm range" in line
    line = cli.fails(2, "units", "resolve", "shop/cart@latest")
    assert "'latest' is not a semantic version" in line


def test_a_range_nothing_satisfies_is_refused(cli: Cli, published: Any) -> None:
    line = cli.fails(
        1, "units", "publish", "shop/web", "1.0.0", "--image", "demo:1", "--dep", "db@^2.0.0"
    )
    assert "FAILED_PRECONDITION" in line and "shop/db" in line


def test_a_bump_smaller_than_the_changes_need_is_refused(cli: Cli, published: Any) -> None:
    line = cli.fails(
        1,
        "units",
        "publish",
        "shop/db",
        "1.1.1",
        "--image",
        "demo:1",
        "--feature",
        "a feature needs a minor bump",
    )
    assert "FAILED_PRECONDITION" in line
    assert "Version bump too small. Required: minor, Actual: patch" in line


def test_cyclic_dependencies_are_refused_naming_the_cycle(cli: Cli) -> None:
    cli.json("units", "publish", "loop/a", "1.0.0", "--image", "demo:1", "--feature", "a")
    cli.json(
        "units",
        "publish",
        "loop/b",
        "1.0.0",
        "--image",
        "demo:1",
        "--dep",
        "a@^1",
        "--feature",
        "b",
    )
    line = cli.fails(
        1,
        "units",
        "publish",
        "loop/a",
        "1.1.0",
        "--image",
        "demo:1",
        "--dep",
        "b@^1",
        "--feature",
        "a needs b",
    )
    assert "FAILED_PRECONDITION" in line
    assert "loop/a" in line and "loop/b" in line


def test_a_deploy_that_fits_nowhere_names_the_short_resource(cli: Cli) -> None:
    cli.json(
        "units",
        "publish",
        "shop/huge",
        "1.0.0",
        "--image",
        "demo:1",
        "--memory",
        "64Gi",
        "--feature",
        "x",
    )
    line = cli.fails(1, "deploy", "shop/huge", "1.0.0", "--building", "shop-edge")
    assert line.startswith("landlord: error: deploy shop/huge 1.0.0: RESOURCE_EXHAUSTED: ")
    assert "memory" in line


def test_impossible_resource_amounts_are_refused_before_any_call(cli: Cli) -> None:
    line = cli.fails(2, "units", "publish", "shop/x", "1.0.0", "--image", "demo:1", "--cpu", "-1")
    assert "--cpu: '-1' is not valid" in line
    line = cli.fails(
        2, "units", "publish", "shop/x", "1.0.0", "--image", "demo:1", "--memory", "256m"
    )
    assert "'m' is ambiguous" in line


def test_an_image_no_host_has_is_refused(cli: Cli) -> None:
    line = cli.fails(
        1, "units", "publish", "shop/ghost", "1.0.0", "--image", "missing:1", "--feature", "x"
    )
    assert "FAILED_PRECONDITION" in line and "missing:1" in line


def test_secret_env_is_published_but_never_printed(cli: Cli, tmp_path: Path) -> None:
    secrets = tmp_path / "vault.env"
    secrets.write_text("# from the vault\nAPI_KEY=file-s3cret-value\n")
    out = cli.run("units", "publish", "shop/vault", "1.0.0", "--image", "demo:1",
                  "--secret-env", "DB_PASSWORD=flag-s3cret-value",
                  "--secret-env-file", str(secrets), "--output", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["version"]["spec"]["secret_env"] == {
        "API_KEY": "<secret>", "DB_PASSWORD": "<secret>"}
    shown = [out.stdout, out.stderr]
    for args in (("units", "show", "shop/vault"), ("units", "versions", "shop/vault"),
                 ("units", "show", "shop/vault", "--output", "json")):
        result = cli.run(*args)
        assert result.returncode == 0, result.stderr
        shown += [result.stdout, result.stderr]
    assert "DB_PASSWORD" in shown[2] and all("s3cret" not in text for text in shown)
