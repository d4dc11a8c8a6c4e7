"""The per-host data plane: one HAProxy per agent, driven through its runtime API.

Use :class:`DataPlane`; the other names are the values it takes and returns.
"""

from agent.dataplane.api import DataPlanePort
from agent.dataplane.dataplane import DataPlane, DrainResult
from agent.dataplane.haproxy_output import ObservedServer
from agent.dataplane.model import MAX_WEIGHT, DataPlaneSpec, ServerSpec, ServerState, UnitSpec
from agent.dataplane.request_log import RequestRecord
from agent.dataplane.settings import DataPlaneSettings, HaproxyPaths
from agent.dataplane.windows import WindowSnapshot, merge_snapshots

__all__ = [
    "MAX_WEIGHT",
    "DataPlane",
    "DataPlanePort",
    "DataPlaneSettings",
    "DataPlaneSpec",
    "DrainResult",
    "HaproxyPaths",
    "ObservedServer",
    "RequestRecord",
    "ServerSpec",
    "ServerState",
    "UnitSpec",
    "WindowSnapshot",
    "merge_snapshots",
]
