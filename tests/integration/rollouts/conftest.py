"""Rollouts on a real etcd and an in-process coordinator, with in-process agents."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from coordinator.app import Coordinator
from coordinator.rollouts.runner import RunnerSettings
from coordinator.rollouts.service import RolloutService
from tests.integration.coordinator.conftest import admin, coordinator, etcd, prefix

__all__ = ["admin", "coordinator", "etcd", "prefix", "rollouts"]


@pytest.fixture
async def rollouts(coordinator: Coordinator) -> AsyncIterator[RolloutService]:
    """The rollout service on the leading coordinator, leading too."""
    service = coordinator.rollout_service(RunnerSettings(poll_s=0.05, retry_s=0.2))
    task = asyncio.create_task(service.lead())
    try:
        yield service
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
