"""Hypothesis strategies for protobuf request messages, derived from their descriptors.

Every field of every message is drawn from its descriptor (scalars by type, enums, nested
messages, repeated fields, maps), so a field or an RPC added to proto/ is fuzzed without a
change here. Values mix fully random ones with "near-valid" ones so requests get past the
first checks: the names the fuzz cluster holds (``Hints``: apartments, units, versions, host
ids, rollout ids, images), boundary numbers (0, -1, 2^31-1, 2^63-1 ...), long strings,
CR/LF/NUL and non-ASCII text. Where valid requests are known (``Hints.templates``), most
requests are one of them with one or two fields (at any depth) given a generated value.
Text never holds lone surrogates (category Cs): protobuf cannot encode them, so such a
request never leaves the client.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.descriptor import (
    FieldDescriptor,
    MethodDescriptor,
    ServiceDescriptor,
)
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

__all__ = ["Hints", "RpcMethod", "message_strategy", "methods_of", "mutation_strategy",
           "request_strategy"]

T = FieldDescriptor
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT32 = (0, 2**32 - 1)
UINT64 = (0, 2**64 - 1)
_RANGES = {
    T.TYPE_INT32: INT32, T.TYPE_SINT32: INT32, T.TYPE_SFIXED32: INT32,
    T.TYPE_INT64: INT64, T.TYPE_SINT64: INT64, T.TYPE_SFIXED64: INT64,
    T.TYPE_UINT32: UINT32, T.TYPE_FIXED32: UINT32,
    T.TYPE_UINT64: UINT64, T.TYPE_FIXED64: UINT64,
}
_BOUNDARY_INTS = (0, 1, -1, 2, 3, 10, 100, 1000, 1001, 65535, 65536, 2**31 - 1, -(2**31),
                  2**32 - 1, 2**53, 2**63 - 1, -(2**63))
_BOUNDARY_FLOATS = (0.0, -0.0, 0.001, 0.5, 1.0, -1.0, 99.999, 100.0, 101.0, 1e9, 1e18, 1e308,
                    -1e308, 5e-324, math.inf, -math.inf, math.nan)
TEXT = st.characters(exclude_categories=["Cs"])
_ODD_TEXT = ("", " ", "a" * 64, "a" * 300, "x" * 40_000, "/", "//", "..", "../etc/passwd",
             "a\r\nb", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", "\0", "a\0b", "\n", "\t",
             "ünïcødé", "名前", "🙂", "\u202e", "\ufeff", "%s%n", "{}", "'\"", "$(id)",
             "-1", "0", "1.0", "1.0.0-", "^1.0.0", ">=1 <2", "*", "latest", "@", "a@b",
             "KEY=VALUE", "/health", "/h\r\nX: y", "tcp://127.0.0.1:2379")


@dataclass(frozen=True)
class Hints:
    """Names that exist in the fuzzed cluster, drawn for the fields named after them."""

    apartments: tuple[str, ...] = ("shop",)
    units: tuple[str, ...] = ("web",)
    versions: tuple[str, ...] = ("1.0.0",)
    host_ids: tuple[str, ...] = ("h1",)
    rollout_ids: tuple[str, ...] = ()
    images: tuple[str, ...] = ("demo:1",)
    buildings: tuple[str, ...] = ("default",)
    extra: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """More names by field name (``instance_id`` -> the seeded instances)."""
    templates: dict[str, tuple[Message, ...]] = field(default_factory=dict)
    """Valid requests by message type (full name): mutated one or two fields at a time."""
    kept: dict[str, frozenset[str]] = field(default_factory=dict)
    """Message type (full name) -> top-level fields its "deep" requests keep as a template
    has them (valid references: apartment, unit, version), so only the settings behind
    them are mutated and the request reaches the checks after the lookups."""

    def for_field(self, name: str) -> tuple[str, ...]:
        """The known values for a string field called ``name`` (empty: none known)."""
        if name in self.extra:
            return self.extra[name]
        if name == "apartment" or name.endswith("_apartment"):
            return self.apartments
        if name in ("unit", "name") or name.endswith("_unit"):
            return self.units
        if name == "version" or name.endswith("_version") or name in ("dependencies",):
            deps = tuple(f"{u}@^{v}" for u in self.units for v in self.versions[:1])
            return self.versions if "version" in name else deps
        if name in ("host_id", "host_ids", "hosts"):
            return self.host_ids
        if name in ("rollout_id",):
            return self.rollout_ids
        if name in ("image", "images"):
            return self.images
        if name in ("building",):
            return self.buildings
        return ()


@dataclass(frozen=True)
class RpcMethod:
    """One RPC of a service: how to call it and what it takes."""

    name: str
    path: str
    request: type[Message]
    server_streaming: bool
    client_streaming: bool


def methods_of(service: ServiceDescriptor) -> list[RpcMethod]:
    """Every method of ``service``, with its request class, from the descriptor."""
    found = []
    for method in service.methods:
        assert isinstance(method, MethodDescriptor)
        found.append(RpcMethod(
            method.name, f"/{service.full_name}/{method.name}",
            GetMessageClass(method.input_type), bool(method.server_streaming),
            bool(method.client_streaming)))
    return found


def _text(name: str, hints: Hints) -> st.SearchStrategy[str]:
    known = hints.for_field(name)
    options: list[st.SearchStrategy[str]] = [
        st.text(TEXT, max_size=20), st.sampled_from(_ODD_TEXT),
        st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-._/"), max_size=70),
    ]
    if known:
        near = st.sampled_from(known)
        options += [near, near, near, near.map(lambda s: s + "\r\n"),
                    near.map(lambda s: s.upper()), near.map(lambda s: s + "\0")]
    return st.one_of(options)


def _integer(kind: int) -> st.SearchStrategy[int]:
    low, high = _RANGES[kind]
    boundary = [v for v in _BOUNDARY_INTS if low <= v <= high]
    return st.one_of(st.sampled_from(boundary), st.integers(low, high),
                     st.integers(max(low, -5), 1100))


def _float(kind: int) -> st.SearchStrategy[float]:
    if kind == T.TYPE_FLOAT:
        return st.one_of(st.sampled_from(_BOUNDARY_FLOATS), st.floats(width=32),
                         st.floats(0, 1000, width=32))
    return st.one_of(st.sampled_from(_BOUNDARY_FLOATS), st.floats(), st.floats(0, 1000))


def _enum(fd: FieldDescriptor) -> st.SearchStrategy[int]:
    enum = fd.enum_type
    assert enum is not None
    numbers = [v.number for v in enum.values]
    if enum.is_closed:  # proto2 enums refuse unknown numbers on assignment
        return st.sampled_from(numbers)
    return st.one_of(st.sampled_from(numbers), st.sampled_from(numbers),
                     st.sampled_from((-1, max(numbers) + 1, 2**31 - 1, -(2**31))))


def _scalar(fd: FieldDescriptor, hints: Hints) -> st.SearchStrategy[Any]:
    if fd.type == T.TYPE_STRING:
        return _text(fd.name, hints)
    if fd.type == T.TYPE_BYTES:
        return st.one_of(st.binary(max_size=40), st.sampled_from((b"", b"\0", b"\xff" * 300)))
    if fd.type == T.TYPE_BOOL:
        return st.booleans()
    if fd.type in (T.TYPE_FLOAT, T.TYPE_DOUBLE):
        return _float(fd.type)
    if fd.type == T.TYPE_ENUM:
        return _enum(fd)
    return _integer(fd.type)


def _field(fd: FieldDescriptor, hints: Hints, depth: int) -> st.SearchStrategy[Any]:
    if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        key = _scalar(fd.message_type.fields_by_name["key"], hints)
        value_fd = fd.message_type.fields_by_name["value"]
        value = _single(value_fd, hints, depth)
        return st.one_of(st.dictionaries(key, value, max_size=3),
                         st.dictionaries(key, value, min_size=60, max_size=70))
    single = _single(fd, hints, depth)
    if fd.is_repeated:
        return st.one_of(st.lists(single, max_size=3), st.lists(single, max_size=40))
    return single


def _single(fd: FieldDescriptor, hints: Hints, depth: int) -> st.SearchStrategy[Any]:
    if fd.message_type is not None:
        return message_strategy(fd.message_type, hints, depth + 1)
    return _scalar(fd, hints)


def message_strategy(descriptor: Any, hints: Hints,
                     depth: int = 0) -> st.SearchStrategy[Message]:
    """Messages of ``descriptor``'s type; each field set or left unset, nesting bounded."""
    cls = GetMessageClass(descriptor)
    if depth > 4:
        return st.just(cls())
    fields = {fd.name: st.none() | _field(fd, hints, depth) for fd in descriptor.fields}
    return st.fixed_dictionaries(fields).map(_builder(cls, descriptor))


def _assign(message: Message, fd: FieldDescriptor, value: Any) -> None:
    """Set field ``fd`` of ``message`` to a drawn ``value`` (replacing what it held)."""
    target = getattr(message, fd.name)
    if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        target.clear()
        if fd.message_type.fields_by_name["value"].type == T.TYPE_MESSAGE:
            for key, item in value.items():
                target[key].CopyFrom(item)
        else:
            target.update(value)
    elif fd.is_repeated:
        del target[:]
        target.extend(value)
    elif fd.type == T.TYPE_MESSAGE:
        target.CopyFrom(value)
    else:
        setattr(message, fd.name, value)


def _builder(cls: type[Message], descriptor: Any) -> Callable[[dict[str, Any]], Message]:
    def build(values: dict[str, Any]) -> Message:
        message = cls()
        for name, value in values.items():
            if value is not None:
                _assign(message, descriptor.fields_by_name[name], value)
        return message
    return build


def _paths(descriptor: Any, depth: int = 0) -> list[tuple[FieldDescriptor, ...]]:
    """Every field of ``descriptor`` and of its singular message fields (one level down)."""
    found: list[tuple[FieldDescriptor, ...]] = []
    for fd in descriptor.fields:
        found.append((fd,))
        nested = fd.message_type
        if nested is not None and not fd.is_repeated and depth < 1:
            found += [(fd, *sub) for sub in _paths(nested, depth + 1)]
    return found


def mutation_strategy(templates: tuple[Message, ...], hints: Hints,
                      kept: frozenset[str] = frozenset(), fewest: int = 1, most: int = 2
                      ) -> st.SearchStrategy[Message]:
    """A valid request (one of ``templates``) with ``fewest`` to ``most`` fields, anywhere in it
    but the top-level ones named in ``kept``, given a generated value: near-valid requests
    that reach the checks behind the first ones."""
    paths = [p for p in _paths(templates[0].DESCRIPTOR) if p[0].name not in kept]

    def change(path: tuple[FieldDescriptor, ...]) -> st.SearchStrategy[Any]:
        return st.tuples(st.just(path), _field(path[-1], hints, len(path)))

    def apply(template: Message, changes: list[tuple[tuple[FieldDescriptor, ...], Any]]
              ) -> Message:
        message = type(template)()
        message.CopyFrom(template)
        for path, value in changes:
            parent = message
            for fd in path[:-1]:
                parent = getattr(parent, fd.name)
            _assign(parent, path[-1], value)
        return message

    return st.builds(apply, st.sampled_from(templates),
                     st.lists(st.sampled_from(paths).flatmap(change), min_size=fewest,
                              max_size=most))


def request_strategy(method: RpcMethod, hints: Hints) -> st.SearchStrategy[Message]:
    """Requests for ``method``: mostly generated, sometimes empty (the defaults)."""
    generated = message_strategy(method.request.DESCRIPTOR, hints)
    templates = hints.templates.get(method.request.DESCRIPTOR.full_name, ())
    if not templates:
        return st.one_of(st.just(method.request()), generated, generated, generated)
    near = mutation_strategy(templates, hints)
    options = [st.just(method.request()), generated, near, near, near,
               st.sampled_from(templates)]
    kept = hints.kept.get(method.request.DESCRIPTOR.full_name)
    if kept:
        deep = mutation_strategy(templates, hints, kept, fewest=0, most=1)
        options += [deep] * 6
    return st.one_of(options)
