"""What the audit trail records about a mutating admin call: who, what, and how it ended.

Which calls are audited is derived from the one authorization table
(``coordinator.api.authz.ADMIN_RULES``): every method whose access is WRITE. A new mutating
RPC is audited as soon as it has its rule there.

The record of a call is one event of type ``EventType.AUDIT`` in the cluster's event history:

- who: the identity the authz interceptor admitted (``admin/alice``) when mutual TLS is on;
  otherwise the identity a client certificate claims (``claimed``, e.g. a call the interceptor
  refused) or ``anonymous``; the peer address always.
- what: the method and the request's essentials, copied from an allow-list of field names
  (``ESSENTIAL_FIELDS``) so a secret can never reach the history: env values, metadata,
  change notes and check commands are not in the list, whatever the request carries.
- outcome: ``OK`` or the status code name, with the status message.

Everything here is pure; coordinator/api/audit_interceptor.py applies it to live calls.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import FieldDescriptor

from coordinator.api.authz import ADMIN_RULES, ADMIN_SERVICE, Access, method_path

__all__ = [
    "ANONYMOUS",
    "AUDITED_METHODS",
    "ESSENTIAL_FIELDS",
    "OK",
    "AuditEntry",
    "Caller",
    "audit_entry",
    "essentials",
]

OK = "OK"
ANONYMOUS = "anonymous"

AUDITED_METHODS: dict[str, str] = {
    method_path(ADMIN_SERVICE.full_name, name): name
    for name, rule in ADMIN_RULES.items() if rule.access is Access.WRITE
}
"""Method path -> method name, for every mutating admin method of the authz table."""

ESSENTIAL_FIELDS = frozenset({
    "apartment", "unit", "version", "to_version", "building", "replicas", "strategy",
    "action", "host_id", "gc_kinds", "rollout_id", "image", "reason",
})
"""Request fields (top level, or in the request's ``spec``) an audit event copies; nothing else."""

_NESTED = "spec"
"""The one message field looked into (PublishVersionRequest.spec: apartment, unit, image)."""

@dataclass(frozen=True)
class Caller:
    """Who made a call, as far as the coordinator knows it."""

    peer: str
    """The transport's peer address (``ipv4:127.0.0.1:50412``)."""
    identity: str = ""
    """``admin/alice`` from the certificate; empty: no certificate identity."""
    verified: bool = False
    """True when the authz interceptor admitted ``identity`` (CA, CRL, validity checked)."""

    @property
    def name(self) -> str:
        return self.identity or ANONYMOUS

    @property
    def source(self) -> str:
        """How ``name`` was learned: mtls (admitted), claimed (not checked) or peer."""
        if not self.identity:
            return "peer"
        return "mtls" if self.verified else "claimed"


@dataclass(frozen=True)
class AuditEntry:
    """One audit event: the fields ``EventLog.make`` takes."""

    message: str
    fields: Mapping[str, str]


def essentials(request: Any) -> dict[str, str]:
    """The allow-listed fields of ``request`` (and of its ``spec``) that are set, as text."""
    found: dict[str, str] = {}
    nested = _message_field(request, _NESTED)
    if nested is not None:
        found.update(_allowed(nested))
    found.update(_allowed(request))  # the request's own fields win (its version, not spec's)
    return found


def audit_entry(method: str, request: Any, caller: Caller, code: str, details: str
                ) -> AuditEntry:
    """The event recording one call of ``method`` (a name: ``Deploy``) and how it ended."""
    what = essentials(request) if request is not None else {}
    subject = _subject(what)
    outcome = code if code == OK else f"{code}: {details}" if details else code
    message = f"{caller.name} {method}{' ' + subject if subject else ''}: {outcome}"
    fields = {
        **what,
        "caller": caller.name,
        "caller_source": caller.source,
        "peer": caller.peer,
        "method": method,
        "outcome": code,
        "error": "" if code == OK else details,
    }
    return AuditEntry(message=message, fields=fields)


def _subject(what: Mapping[str, str]) -> str:
    subject = "/".join(what[k] for k in ("apartment", "unit") if what.get(k))
    version = what.get("version") or what.get("to_version")
    if version:
        subject += f"@{version}"
    if what.get("host_id"):
        subject += f"{' ' if subject else ''}host {what['host_id']}"
    return subject


def _message_field(message: Any, name: str) -> Any | None:
    descriptor = getattr(message, "DESCRIPTOR", None)
    if descriptor is None or name not in descriptor.fields_by_name:
        return None
    field = descriptor.fields_by_name[name]
    if field.type != FieldDescriptor.TYPE_MESSAGE or not message.HasField(name):
        return None
    return getattr(message, name)


def _allowed(message: Any) -> dict[str, str]:
    descriptor = getattr(message, "DESCRIPTOR", None)
    if descriptor is None:
        return {}
    found: dict[str, str] = {}
    for field in descriptor.fields:
        if field.name not in ESSENTIAL_FIELDS or field.type == FieldDescriptor.TYPE_MESSAGE:
            continue
        value = getattr(message, field.name)
        values = list(value) if field.is_repeated else [value]
        if field.type == FieldDescriptor.TYPE_ENUM:
            values = [_enum_name(field, v) for v in values]
        text = ",".join(str(v) for v in values if v not in ("", 0, False))
        if text:
            found[field.name] = text
    return found


def _enum_name(field: FieldDescriptor, number: int) -> str:
    """``STRATEGY_CANARY`` -> ``canary``; unset (0) -> '' so it is left out."""
    if number == 0:
        return ""
    enum = field.enum_type
    value = enum.values_by_number.get(number) if enum is not None else None
    if enum is None or value is None:
        return str(number)
    prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"
    name: str = value.name
    return (name.removeprefix(prefix) or name).lower()
