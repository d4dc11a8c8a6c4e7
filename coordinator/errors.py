"""Errors of the coordinator on top of the common root."""

from __future__ import annotations

from typing import ClassVar

from common.errors import FailedPrecondition, LandlordError

__all__ = ["HistoryCompacted", "NotLeader"]


class NotLeader(FailedPrecondition):
    """This coordinator does not lead (or just lost the lead); ``leader_address`` says who does."""

    def __init__(self, message: str, leader_address: str = "", **context: object) -> None:
        super().__init__(message, leader_address=leader_address, **context)
        self.leader_address = leader_address


class HistoryCompacted(LandlordError):
    """A watch asked for revisions etcd has compacted away; re-list, then watch again."""

    code: ClassVar[str] = "OUT_OF_RANGE"

    def __init__(self, message: str, compacted_revision: int) -> None:
        super().__init__(message, compacted_revision=compacted_revision)
        self.compacted_revision = compacted_revision
