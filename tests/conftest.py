"""Test-wide conventions: markers by directory, the cluster launcher on the import path,
and cleanup of what tests start."""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

TESTS = Path(__file__).parent
# the local cluster launcher (scripts/local_cluster), shared with `make demo` and bench/
sys.path.insert(0, str(TESTS.parent / "scripts"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        rel = Path(str(item.fspath)).relative_to(TESTS)
        kind = rel.parts[0]
        if kind in ("unit", "integration", "e2e", "fuzz"):
            item.add_marker(getattr(pytest.mark, kind))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test that used a cluster (anything with ``logs()``) reports the processes'
    log tails next to its traceback: the coordinator's and agents' view of what went wrong."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if not report.failed or call.when == "setup":
        return
    for name, value in getattr(item, "funcargs", {}).items():
        for candidate in (value, getattr(value, "cluster", None)):
            logs = getattr(candidate, "logs", None)
            if callable(logs):
                try:
                    report.sections.append((f"logs of fixture {name!r}", str(logs())))
                except Exception as exc:  # a log we cannot read must not hide the failure
                    report.sections.append((f"logs of fixture {name!r}", f"unreadable: {exc}"))
                break


def _left_over(labels: dict[str, str], owner_label: str) -> bool:
    """A test container of this session, or of one that is gone (not one of another pytest
    running now: they are told apart by the owner's pid, see tests/e2e/real_cluster.py)."""
    owner = labels.get(owner_label, "")
    if not owner.isdigit() or int(owner) == os.getpid():
        return True
    return not psutil.pid_exists(int(owner))


def _remove_test_containers() -> None:
    try:
        import docker
    except ImportError:  # pragma: no cover - docker SDK is a dependency
        return
    from tests.e2e.real_cluster import OWNER_LABEL, TEST_LABEL

    try:
        client = docker.from_env(timeout=30)
        # Low-level list: no per-container inspect that a concurrent removal could fail.
        for found in client.api.containers(all=True, filters={"label": TEST_LABEL}):
            if _left_over(found.get("Labels") or {}, OWNER_LABEL):
                with contextlib.suppress(docker.errors.NotFound):
                    client.api.remove_container(found["Id"], force=True)
        client.close()
    except docker.errors.DockerException:
        # No Docker here (a unit-only run): there is nothing of ours to remove.
        return
    finally:
        # docker.from_env's API-version probe leaves its unix socket to the garbage
        # collector; collect it here rather than as a ResourceWarning in some later test
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()


@pytest.fixture(scope="session", autouse=True)
def _cleanup_test_containers(request: pytest.FixtureRequest) -> Iterator[None]:
    """Remove left-over test containers (landlord.test=1), before and after the session."""
    needs_docker = any(
        Path(str(i.fspath)).relative_to(TESTS).parts[0] != "unit" for i in request.session.items
    )
    if needs_docker:
        _remove_test_containers()
    yield
    if needs_docker:
        _remove_test_containers()
