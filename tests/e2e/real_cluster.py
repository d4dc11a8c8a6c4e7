"""The end-to-end tests' real cluster: the launcher's ``LocalCluster`` (scripts/local_cluster:
a private etcd, ``landlord-coordinator``s and ``landlord-agent``s with Docker and HAProxy)
made safe to run next to another pytest on the same machine and Docker:

- every container its agents start carries ``landlord.test=1`` and ``landlord.owner-pid=<pid
  of this pytest>`` next to the cluster's own ``landlord.cluster=<name>``: ``close()`` removes
  the cluster's containers, and the session cleanup (tests/conftest.py) removes test
  containers whose owner is gone or is this session, never another session's;
- host ids are ``host_id(name)``, e.g. ``t4711-h1``: an agent adopts every container
  labelled with its host id, so two sessions must not share one (tests write their
  expectations with the same function);
- instances get host ports from a range of their own (one of ``PORT_SLOTS`` slices of
  20000-29999, claimed with a lock file for the cluster's lifetime).
"""

from __future__ import annotations

import fcntl
import itertools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from local_cluster.cluster import LocalCluster
from local_cluster.processes import ClusterError

__all__ = ["HOST_PREFIX", "OWNER_LABEL", "TEST_LABEL", "RealCluster", "host_id"]

TEST_LABEL = "landlord.test=1"
OWNER_LABEL = "landlord.owner-pid"
OWNER = f"{OWNER_LABEL}={os.getpid()}"
HOST_PREFIX = f"t{os.getpid()}-"
PORT_SLOTS, SLOT_SIZE, FIRST_PORT = 10, 1000, 20000
_numbers = itertools.count(1)


def host_id(name: str) -> str:
    """The id under which this pytest's clusters run host ``name``."""
    return HOST_PREFIX + name


def _claim_port_slot() -> tuple[int, IO[str]]:
    """The first free slot of instance host ports, and the open lock file that holds it."""
    for slot in range(PORT_SLOTS):
        lock = Path(f"/tmp/landlord-e2e-ports-{slot}.lock").open("w")  # noqa: SIM115
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        return slot, lock
    raise ClusterError(f"all {PORT_SLOTS} port slots of test clusters are taken")


class RealCluster(LocalCluster):
    """A ``LocalCluster`` named ``e2e-<pid>-<n>`` with the tests' labels and a port slot."""

    PREFIX = "/landlord-real"

    def __init__(self, coordinator_settings: Mapping[str, Any] | None = None, *,
                 tls: bool = True) -> None:
        slot, self._slot_lock = _claim_port_slot()
        first = FIRST_PORT + slot * SLOT_SIZE
        super().__init__(f"e2e-{os.getpid()}-{next(_numbers)}", prefix=self.PREFIX,
                         labels=[TEST_LABEL, OWNER], tls=tls,
                         coordinator_settings={"port_range_start": first,
                                               "port_range_end": first + SLOT_SIZE - 1,
                                               **(coordinator_settings or {})})

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._slot_lock.close()
