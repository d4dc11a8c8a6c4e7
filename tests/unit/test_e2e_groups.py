"""End-to-end files that can run at the same time never share a host address
(tests/e2e/conftest.py groups those that do)."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from tests.e2e.conftest import group_of

E2E = Path(__file__).resolve().parents[1] / "e2e"
REAL_LOAD_HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
"""tests/e2e/real_load.py HOSTS: what real_cluster() without hosts= starts agents on."""


def real_agent_addresses(source: str) -> set[str]:
    """Addresses a file's real agents (or entry points) use: its 127.0.0.x literals (not
    127.0.0.1) and, if it starts a real cluster without naming its hosts, real_load.HOSTS.
    Files with only simulated agents (tests/e2e/cluster.py) bind nothing: none."""
    if "real_cluster" not in source and "LocalCluster" not in source and (
            "DemoScenario" not in source and "demo.py" not in source):
        return set()
    found = set(re.findall(r'"(127\.0\.0\.(?:[2-9]|[1-9]\d+))"', source))
    if re.search(r"real_cluster\((?:coordinators=\d+)?\)", source):
        found |= set(REAL_LOAD_HOSTS)
    return found


def test_files_that_share_an_address_share_a_group() -> None:
    users: dict[str, set[str]] = defaultdict(set)
    for path in sorted(E2E.glob("test_*.py")):
        for address in real_agent_addresses(path.read_text()):
            users[address].add(group_of(path))
    shared = {address: groups for address, groups in users.items() if len(groups) > 1}
    assert not shared, ("e2e files of different groups use one address; give one of them "
                        f"its own addresses or put them in one group: {shared}")


def test_the_check_sees_a_default_cluster_and_literal_addresses() -> None:
    assert real_agent_addresses("with real_cluster() as c: ...") == set(REAL_LOAD_HOSTS)
    assert real_agent_addresses('real_cluster(hosts={"a": "127.0.0.41"})') == {"127.0.0.41"}
    assert real_agent_addresses('Cluster().add_agent("h1", "127.0.0.2")') == set()
