"""End-to-end files run two at a time (``make test``: ``-n 2 --dist loadgroup``): every test
of a file goes to one worker (its module-scoped cluster is set up once), and files whose
clusters use the same host addresses (an agent binds its wake listener on its address) share
one group, so they never run at the same time. Each file's group is its name unless
SHARED_ADDRESSES puts it with others; tests/unit/test_e2e_groups.py checks that no two
files of different groups use one address.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_ADDRESSES: dict[str, tuple[str, ...]] = {
    # real agents on 127.0.0.2-4 (real_load.HOSTS, the demo's hosts) or some of them
    "hosts-2-4": ("test_agent_real_cluster", "test_cli_rollouts", "test_coord_real_cluster",
                  "test_demo", "test_image_pull_real_cluster", "test_registry_images",
                  "test_rollout_real_cluster", "test_rollout_scenarios"),
    # (the simulated agents of tests/e2e/cluster.py bind nothing on their addresses)
    "hosts-61-62": ("test_cluster_snapshot", "test_unit_ops_real_cluster"),
    "hosts-71-72": ("test_host_drain_real_cluster", "test_web_view"),
}
GROUP_OF = {module: group for group, modules in SHARED_ADDRESSES.items() for module in modules}

# xdist workers get COLUMNS=80 from the runner: the `landlord` commands the tests start would
# then wrap their tables into that width; a pipe without COLUMNS gets full-width tables
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.pop("COLUMNS", None)
    os.environ.pop("LINES", None)


def group_of(path: Path) -> str:
    return GROUP_OF.get(path.stem, path.stem)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.xdist_group(group_of(Path(str(item.fspath)))))
