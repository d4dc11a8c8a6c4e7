"""End-to-end files run two at a time (``make test``: ``-n 2``): every test of a file goes to
one worker (its module-scoped cluster is set up once, its tests keep their order), and files
whose clusters use the same host addresses (an agent binds its wake listener on its address)
share one group, run one after the other on one worker. Each file's group is its name unless
SHARED_ADDRESSES puts it with others; tests/unit/test_e2e_groups.py checks that no two files
of different groups use one address. (xdist's own ``--dist loadgroup`` marks do not take
with this pytest: the scheduler below groups by file name instead.)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Whole groups of files to a worker, in collection order (xdist's load-scope
    scheduling with this file-to-group scope)."""
    from xdist.scheduler import LoadScopeScheduling

    class ByGroup(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return group_of(Path(nodeid.split("::", 1)[0]))

    return ByGroup(config, log)
