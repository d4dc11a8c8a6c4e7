"""How large an admin request each method takes, checked on the received bytes before they
are parsed.

grpc refuses any message over the server's receive limit (``MAX_ADMIN_REQUEST_BYTES``,
4 MiB) from its length prefix. Only a publish or a deploy can need that much; every other
admin request is names and a few numbers, so one over ``MAX_SMALL_REQUEST_BYTES`` is
refused INVALID_ARGUMENT without being parsed (parsing a 4 MB ListVersions and quoting
its name cost several times its size: 64 of them took the coordinator to 1.1 GB).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common.input_bounds import MAX_ADMIN_REQUEST_BYTES, MAX_SMALL_REQUEST_BYTES
from coordinator.api.metrics_interceptor import ADMIN_PREFIX

__all__ = ["FULL_SIZE_METHODS", "TooLarge", "request_limit", "size_guard", "too_large_text"]

FULL_SIZE_METHODS = frozenset({"/landlord.v1.Admin/PublishVersion",
                               "/landlord.v1.Admin/Deploy"})
"""Admin methods whose requests may be up to ``MAX_ADMIN_REQUEST_BYTES`` (a spec; 32
checks)."""


@dataclass(frozen=True)
class TooLarge:
    """What a guarded deserializer gives for a request over its method's limit."""

    size: int
    limit: int


def request_limit(method: str) -> int:
    return MAX_ADMIN_REQUEST_BYTES if method in FULL_SIZE_METHODS else MAX_SMALL_REQUEST_BYTES


def size_guard(deserializer: Callable[[bytes], Any] | None, method: str
               ) -> Callable[[bytes], Any] | None:
    """``deserializer`` that first answers ``TooLarge`` for more than ``method``'s limit
    (an admin method's; other services' as they are)."""
    limit = request_limit(method)
    if deserializer is None or limit >= MAX_ADMIN_REQUEST_BYTES or \
            not method.startswith(ADMIN_PREFIX):
        return deserializer
    parse = deserializer

    def guarded(data: bytes) -> Any:
        if len(data) > limit:
            return TooLarge(len(data), limit)
        return parse(data)

    return guarded


def too_large_text(method: str, refused: TooLarge) -> str:
    """The refusal's text, in the words the CLI gives grpc's own (``request_too_large``)."""
    return (f"{method} refused: request too large: {refused.size} bytes, limit "
            f"{refused.limit >> 10} KiB (only PublishVersion and Deploy take up to "
            f"{MAX_ADMIN_REQUEST_BYTES >> 20} MiB)")
