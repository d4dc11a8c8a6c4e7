"""Reading one file out of a container's filesystem through the Engine API's archive
endpoint (``GET /containers/{id}/archive``), which works on a created container that has
not started yet, so the agent can read the image's account files before the start."""

from __future__ import annotations

import io
import tarfile

import docker

__all__ = ["read_container_file"]

_TAR_SLACK = 64 * 1024
"""Archive bytes beyond the file's own: headers and padding."""


def read_container_file(api: docker.APIClient, container_id: str, path: str,
                        max_bytes: int) -> bytes:
    """The first ``max_bytes`` of regular file ``path`` (b"" when it is no regular file);
    raises docker's NotFound when it does not exist. Blocking: run it in a thread."""
    stream, _ = api.get_archive(container_id, path)
    buffer = bytearray()
    for chunk in stream:
        buffer += chunk
        if len(buffer) > max_bytes + _TAR_SLACK:
            break
    try:
        with tarfile.open(fileobj=io.BytesIO(bytes(buffer)), mode="r:") as archive:
            member = archive.next()
            if member is None or not member.isreg():
                return b""
            reader = archive.extractfile(member)
            return reader.read(max_bytes) if reader is not None else b""
    except tarfile.TarError:  # cut short: the file is larger than wanted
        return bytes(buffer[512:512 + max_bytes])
