"""Fixtures for agent tests on real Docker (helpers live in agent_fixtures)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import docker
import pytest
from agent_fixtures import AgentHarness, ensure_demo_images


@pytest.fixture(scope="session")
def demo_images() -> None:
    ensure_demo_images()


@pytest.fixture
async def harness(tmp_path: Path, demo_images: None) -> AsyncIterator[AgentHarness]:
    """Agents with short timings; their containers are removed at the end."""
    h = AgentHarness(tmp_path)
    try:
        yield h
    finally:
        await h.close()


@pytest.fixture
def docker_client() -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    yield client
    client.close()
