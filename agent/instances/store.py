"""Per-instance records, persisted as JSON in the data directory.

A record is written before each side effect it describes (intent first), so an agent
that restarts finds what it was doing and can adopt or finish it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.instances.private_files import private_dir, write_private
from agent.instances.spec import InstanceSpec
from common.errors import LandlordError
from common.lifecycle import LifecycleRecord
from common.recovery import FailureKind, RecoveryState

__all__ = ["InstanceRecord", "RecordStore"]

log = logging.getLogger(__name__)


@dataclass
class InstanceRecord:
    """Everything the agent keeps about one instance between restarts."""

    spec: InstanceSpec
    lifecycle: LifecycleRecord
    container_id: str | None = None
    generation: int = 0
    recovery: RecoveryState = field(default_factory=RecoveryState)
    """Open incident and incident count (common.recovery), kept across agent restarts."""
    last_request: float | None = None
    classid: int | None = None
    """net_cls class minor of its egress class, when shaped."""
    enforcement: dict[str, str] = field(default_factory=dict)
    total_restarts: int = 0

    @property
    def instance_id(self) -> str:
        return self.spec.instance_id

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec.to_dict(),
            "lifecycle": self.lifecycle.to_dict(),
            "container_id": self.container_id,
            "generation": self.generation,
            "recovery": {
                "kind": self.recovery.kind.value if self.recovery.kind else None,
                "failed_tries": self.recovery.failed_tries,
                "incidents": self.recovery.incidents,
                "healthy_since": self.recovery.healthy_since,
            },
            "last_request": self.last_request,
            "classid": self.classid,
            "enforcement": dict(self.enforcement),
            "total_restarts": self.total_restarts,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InstanceRecord:
        return cls(
            spec=InstanceSpec.from_dict(data["spec"]),
            lifecycle=LifecycleRecord.from_dict(data["lifecycle"]),
            container_id=data.get("container_id"),
            generation=int(data.get("generation", 0)),
            recovery=_recovery_state(data.get("recovery") or {}),
            last_request=data.get("last_request"),
            classid=data.get("classid"),
            enforcement=dict(data.get("enforcement") or {}),
            total_restarts=int(data.get("total_restarts", 0)),
        )


def _recovery_state(data: dict[str, Any]) -> RecoveryState:
    kind = data.get("kind")
    return RecoveryState(
        kind=FailureKind(kind) if kind else None,
        failed_tries=int(data.get("failed_tries", 0)),
        incidents=int(data.get("incidents", 0)),
        healthy_since=data.get("healthy_since"),
    )


class RecordStore:
    """One JSON file per instance under ``<data_dir>/instances``; atomic replace.

    Records hold secret env values, so they are root-only (agent.instances.private_files)."""

    def __init__(self, data_dir: Path) -> None:
        self.directory = private_dir(data_dir / "instances")

    def _path(self, instance_id: str) -> Path:
        return self.directory / f"{instance_id}.json"

    def save(self, record: InstanceRecord) -> None:
        path = self._path(record.instance_id)
        tmp = path.with_name(f".{path.name}.tmp")
        write_private(tmp, json.dumps(record.to_dict(), sort_keys=True))
        os.replace(tmp, path)

    def delete(self, instance_id: str) -> None:
        self._path(instance_id).unlink(missing_ok=True)

    def load_all(self) -> list[InstanceRecord]:
        records: list[InstanceRecord] = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                records.append(InstanceRecord.from_dict(json.loads(path.read_text())))
            except (OSError, ValueError, KeyError, TypeError, LandlordError) as exc:
                # a corrupt record must not stop the agent; keep it aside for a person
                log.error("unreadable instance record %s: %s", path, exc)
                path.rename(path.with_suffix(".corrupt"))
        return records
