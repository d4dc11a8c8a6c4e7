"""Image pulls over the Docker Engine API, with a deadline that really ends them.

The SDK's ``APIClient.pull`` posts with no socket timeout and hides the HTTP response, so
a registry that stalls would hold a thread forever. Here the request is made the same
way (``POST /images/create``, ``X-Registry-Auth``), but the response is kept: at the
deadline it is closed, which ends the blocked read and makes dockerd cancel the pull.
Error lines in the progress stream (``{"error": ...}``) carry the registry's own text;
they become ``Unavailable`` with that text.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Mapping
from typing import Any

import docker
import docker.auth
import docker.errors
import docker.utils
import requests.exceptions

from agent.runtime.protocol import PullStatus
from common.errors import Unavailable

__all__ = ["pull_image"]


class _Pull:
    """One pull in its own thread: the response is kept so the deadline can close it."""

    def __init__(self, api: docker.APIClient, reference: str,
                 auth: Mapping[str, str] | None, emit: Callable[[PullStatus], None]) -> None:
        self.api = api
        self.reference = reference
        self.auth = auth
        self.emit = emit
        self.response: Any = None
        self.closed = threading.Event()
        self.error: str | None = None

    def run(self) -> None:
        try:
            self._run()
        except docker.errors.APIError as exc:
            self.error = str(exc.explanation or exc)
        except (docker.errors.DockerException, requests.exceptions.RequestException,
                OSError, ValueError) as exc:
            if not self.closed.is_set():
                self.error = f"cannot reach docker: {exc}"

    def _run(self) -> None:
        api = self.api
        repository, tag = docker.utils.parse_repository_tag(self.reference)
        headers = {}
        if self.auth:
            headers["X-Registry-Auth"] = docker.auth.encode_header(dict(self.auth))
        # the SDK's own request (APIClient.pull), keeping the response to close it
        response = api._post(api._url("/images/create"),
                             params={"fromImage": repository, "tag": tag or "latest"},
                             headers=headers, stream=True, timeout=None)
        self.response = response
        try:
            api._raise_for_status(response)
            for line in api._stream_helper(response, decode=True):
                if not isinstance(line, dict):
                    continue
                if "error" in line:
                    detail = line.get("errorDetail") or {}
                    self.error = str(detail.get("message") or line["error"])
                    return
                progress = line.get("progressDetail") or {}
                self.emit(PullStatus(str(line.get("id") or ""), str(line.get("status") or ""),
                                     int(progress.get("current") or 0),
                                     int(progress.get("total") or 0)))
        finally:
            self.close()

    def close(self) -> None:
        self.closed.set()
        response = self.response
        if response is not None:
            with contextlib.suppress(Exception):
                response.close()


async def pull_image(api: docker.APIClient, reference: str, auth: Mapping[str, str] | None,
                     on_status: Callable[[PullStatus], None], timeout: float) -> None:
    """Pull ``reference``; ``on_status`` runs in the event loop. Unavailable on failure."""
    loop = asyncio.get_running_loop()

    def emit(status: PullStatus) -> None:
        with contextlib.suppress(RuntimeError):  # loop closed during shutdown
            loop.call_soon_threadsafe(on_status, status)

    pull = _Pull(api, reference, auth, emit)
    done = asyncio.Event()

    def finished() -> None:
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(done.set)

    def body() -> None:
        try:
            pull.run()
        finally:
            finished()

    thread = threading.Thread(target=body, name=f"pull-{reference[-24:]}", daemon=True)
    thread.start()
    try:
        async with asyncio.timeout(timeout):
            await done.wait()
    except TimeoutError:
        pull.close()
        raise Unavailable(f"pulling {reference} did not finish within {timeout:g} s",
                          image=reference) from None
    except asyncio.CancelledError:
        pull.close()
        raise
    if pull.error is not None:
        raise Unavailable(f"pulling {reference} failed: {pull.error}", image=reference)
