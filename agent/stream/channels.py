"""One channel per coordinator, kept connected (TLS done) for as long as the agent runs.

A failover then costs an agent one new stream on a connection that is already up, not a
TCP connect plus a TLS handshake at the moment a thousand agents all need one from the
new leader. Each channel has a task that asks it to connect again whenever it falls idle
(a coordinator closes a connection with no call after its idle timeout); while a
coordinator is down, grpc itself retries, with a short backoff (``RECONNECT_OPTIONS``), so
a coordinator that comes back is reachable again within a couple of seconds.

The TLS files are those of ``ClientCertificates`` as last (re)loaded: when they changed,
the next ``get`` closes every channel and opens new ones with the new files (a stream
still open on an old channel is the caller's, closed at the end of its session).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import grpc

from common.transport import ClientCertificates, TlsSettings, create_channel

__all__ = ["RECONNECT_OPTIONS", "WarmChannels"]

RECONNECT_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
)
"""A dead coordinator is tried again at most every 2 s (grpc's default: up to 120 s)."""


class WarmChannels:
    def __init__(self, tls: TlsSettings, certificates: ClientCertificates | None) -> None:
        self._tls = tls
        self._certificates = certificates
        self._files = self._current_files()
        self._channels: dict[str, Any] = {}
        self._keepers: dict[str, asyncio.Task[None]] = {}

    def _current_files(self) -> bytes | None:
        return self._certificates.certificate if self._certificates is not None else None

    async def get(self, target: str) -> Any:
        """The channel to ``target`` (made, and kept warm, on first use)."""
        if self._current_files() != self._files:
            await self.close()
            self._files = self._current_files()
        channel = self._channels.get(target)
        if channel is None:
            channel = create_channel(target, self._tls, certificates=self._certificates,
                                     options=RECONNECT_OPTIONS)
            self._channels[target] = channel
            self._keepers[target] = asyncio.create_task(_keep_connected(channel),
                                                        name=f"warm-{target}")
        return channel

    async def warm(self, targets: tuple[str, ...]) -> None:
        """Connect to every one of ``targets`` now (a later failover finds them ready)."""
        for target in targets:
            await self.get(target)

    async def close(self) -> None:
        keepers, self._keepers = self._keepers, {}
        channels, self._channels = self._channels, {}
        for task in keepers.values():
            task.cancel()
        for task in keepers.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for channel in channels.values():
            await channel.close(None)


async def _keep_connected(channel: Any) -> None:
    """Ask the channel to connect whenever it is idle (a new channel, or an idle timeout)."""
    state = channel.get_state(try_to_connect=True)
    while True:
        await channel.wait_for_state_change(state)
        state = channel.get_state()
        if state == grpc.ChannelConnectivity.SHUTDOWN:
            return
        if state == grpc.ChannelConnectivity.IDLE:
            state = channel.get_state(try_to_connect=True)
