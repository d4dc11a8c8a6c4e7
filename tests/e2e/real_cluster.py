"""The end-to-end tests' real cluster: the launcher's ``LocalCluster`` (scripts/local_cluster:
a private etcd, ``landlord-coordinator``s and ``landlord-agent``s with Docker and HAProxy)
with the tests' labels.

Every container its agents start carries ``landlord.test=1`` and ``landlord.owner-pid=<pid
of this pytest>`` next to the cluster's own ``landlord.cluster=<name>``: ``close()`` removes
the cluster's containers, and the session cleanup (tests/conftest.py) removes test
containers whose owner is gone or is this session, never those of another session running
at the same time.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from typing import Any

from local_cluster.cluster import LocalCluster

__all__ = ["OWNER_LABEL", "TEST_LABEL", "RealCluster"]

TEST_LABEL = "landlord.test=1"
OWNER_LABEL = "landlord.owner-pid"
_numbers = itertools.count(1)


class RealCluster(LocalCluster):
    """A ``LocalCluster`` named ``e2e-<pid>-<n>`` with the tests' labels."""

    PREFIX = "/landlord-real"

    def __init__(self, coordinator_settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"e2e-{os.getpid()}-{next(_numbers)}", prefix=self.PREFIX,
                         labels=[TEST_LABEL, f"{OWNER_LABEL}={os.getpid()}"],
                         coordinator_settings=coordinator_settings)
