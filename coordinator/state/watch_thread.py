"""An etcd watch read by a thread of its own and handed to the event loop in batches.

On the event loop each watch response is one read, and each read waits for a turn of the
loop. A leader busy with thousands of agent streams runs only a few turns a second, so a
watch read there fell minutes behind the commits (at 150,000 instances: "the etcd watch is
behind ... not seen within 10 s", and rollouts that gave up). Here a thread reads the
stream with gRPC's synchronous API (aio serves one loop per process, see
``coordinator/state/etcd_client.py``) and queues each response's events; the loop takes
everything queued in one turn, however many responses that is.

Errors end the iteration as the store's other calls do: ``HistoryCompacted`` when the
start revision was compacted, ``Unavailable`` when the stream broke or etcd ended it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
from aetcd import rpc
from aetcd.rpc import rpc_pb2_grpc
from aetcd.utils import prefix_range_end

from common.errors import Unavailable
from coordinator.errors import HistoryCompacted

__all__ = ["watch_in_thread"]

log = logging.getLogger(__name__)

_Item = list[Any] | BaseException


async def watch_in_thread(channel: Callable[[], Any], prefix: bytes,
                          start_revision: int) -> AsyncIterator[Any]:
    """The etcd events (``mvccpb.Event``) under ``prefix`` from ``start_revision`` on, read
    by a thread over a synchronous channel that ``channel()`` opens (closed at the end)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[_Item] = asyncio.Queue()
    stop = threading.Event()
    sync_channel = channel()
    create = rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
        key=prefix, range_end=prefix_range_end(prefix), start_revision=start_revision))

    def requests() -> Iterator[Any]:
        yield create
        stop.wait()  # the stream stays open until the watch is closed

    responses = rpc_pb2_grpc.WatchStub(sync_channel).Watch(requests())

    def post(item: _Item) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            stop.set()

    def read() -> None:
        try:
            for response in responses:
                if response.compact_revision:
                    post(HistoryCompacted(
                        f"etcd compacted the history below revision "
                        f"{response.compact_revision}", response.compact_revision))
                    return
                if response.canceled:
                    post(Unavailable(f"etcd ended the watch: {response.cancel_reason}",
                                     operation="watch"))
                    return
                if response.events:
                    post(list(response.events))
            post(Unavailable("etcd closed the watch", operation="watch"))
        except grpc.RpcError as exc:
            if not stop.is_set():
                post(Unavailable(f"etcd is unreachable (watch): {exc.code().name}",
                                 operation="watch"))
        except Exception as exc:  # handed to the loop, where the watch's reader sees it
            post(exc)

    thread = threading.Thread(target=read, name="etcd-watch", daemon=True)
    thread.start()
    try:
        while True:
            item = await queue.get()
            if isinstance(item, BaseException):
                raise item
            for event in item:
                yield event
    finally:
        stop.set()
        responses.cancel()
        sync_channel.close()
