"""Schema versions: what lets two releases of Landlord one apart work together.

During a rolling upgrade agents and coordinators of two releases meet, on the agent stream
and over the records in etcd. Each contract carries a schema number, defined here once:

- ``STREAM_SCHEMA``: the agent stream (proto/landlord/v1/agent.proto). The agent says its
  schema in Register, the coordinator says its own in Registered. Each side accepts a peer
  at most one schema away (``check_stream_peer``); anything further is refused with
  FAILED_PRECONDITION naming both.
- ``RECORD_SCHEMA``: the JSON records the coordinators keep in etcd. Each record carries
  ``"schema"``; the leader migrates older records once when it takes the lead
  (coordinator/state/migrations.py) and records the cluster's schema under
  ``{prefix}/schema``. A coordinator that finds a newer cluster schema does not lead.

Release 0.1.0 sent and stored no schema at all: an absent or zero schema is schema 1
(``UNVERSIONED``). Bump a number when its contract changes in a way the previous release
must be told about (a new required meaning, a changed shape), and add the migration step.
"""

from __future__ import annotations

from importlib import metadata

from common.errors import FailedPrecondition

__all__ = [
    "RECORD_SCHEMA",
    "SCHEMA_FIELD",
    "STREAM_SCHEMA",
    "STREAM_SCHEMA_OLDEST",
    "UNVERSIONED",
    "check_stream_peer",
    "peer_schema",
    "release",
]

UNVERSIONED = 1
"""The schema of whatever says none: release 0.1.0 (proto3's default 0, a record without
``"schema"``)."""

STREAM_SCHEMA = 2
"""The agent stream schema of this release (2: Register and Registered carry it)."""
STREAM_SCHEMA_OLDEST = STREAM_SCHEMA - 1
"""The oldest peer schema this release works with: the previous release's."""

RECORD_SCHEMA = 2
"""The schema of the records this release writes to etcd (2: each record says its schema)."""
SCHEMA_FIELD = "schema"
"""The name of the schema number inside a stored record."""


def release() -> str:
    """This installation's Landlord release ("" when it is not installed as a package)."""
    try:
        return metadata.version("landlord")
    except metadata.PackageNotFoundError:
        return ""


def peer_schema(sent: int) -> int:
    """The schema a peer speaks, from the number it sent (0: it sent none)."""
    return sent if sent > 0 else UNVERSIONED


def check_stream_peer(peer: int, *, peer_role: str, role: str, peer_release: str = "",
                      mine: int = STREAM_SCHEMA, oldest: int = STREAM_SCHEMA_OLDEST) -> None:
    """Raise FailedPrecondition when a peer speaking stream schema ``peer`` is older than
    ``oldest`` or more than one schema newer than ``mine`` (``peer_role``/``role``: "agent"
    or "coordinator", for the message)."""
    if oldest <= peer <= mine + 1:
        return
    release = f" (release {peer_release})" if peer_release else ""
    older = peer < mine
    upgrade = peer_role if older else role
    raise FailedPrecondition(
        f"the {peer_role}{release} speaks agent stream schema {peer} and this {role} "
        f"speaks schema {mine}; releases more than one schema apart cannot work together "
        f"(accepted: {oldest} to {mine + 1}): upgrade the {upgrade}",
        peer_schema=peer, schema=mine)
