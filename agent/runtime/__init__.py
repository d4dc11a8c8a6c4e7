"""Container runtime: the Protocol the agent codes against and its Docker implementation."""

from agent.runtime.protocol import (
    ContainerEvent,
    ContainerInfo,
    ContainerRuntime,
    CreateRequest,
    ExecResult,
    ImageInfo,
    Mount,
)

__all__ = [
    "ContainerEvent",
    "ContainerInfo",
    "ContainerRuntime",
    "CreateRequest",
    "ExecResult",
    "ImageInfo",
    "Mount",
]
