"""Version records written before the unit spec held everything that runs still load."""

from __future__ import annotations

import json

from common.unit_spec import StateMode, UnitSpec
from common.versions import VersionTag
from coordinator.state.records import VersionRecord, decode, encode

SPEC = UnitSpec("shop", "web", "1.0.0", "demo:1", 8080, ("serve",), {"A": "1"})


def legacy_record(**beside_the_tag: object) -> bytes:
    """A record as the coordinator wrote it while these fields lived beside the tag."""
    tag = VersionTag("shop/web", "1.0.0", 1.0, SPEC.checksum(), SPEC)
    return json.dumps({"tag": tag.to_dict(), "changes": {"fixes": ["f"]},
                       **beside_the_tag}).encode()


def test_a_legacy_record_folds_its_run_fields_into_the_spec() -> None:
    raw = legacy_record(service_port=18080, state_mode="snapshot", idle_timeout_s=600.0,
                        warmup_s=2.5, healthy_threshold=2, port_assigned=True)
    record = decode(VersionRecord, raw)
    spec = record.tag.spec
    assert (spec.port, spec.service_port, spec.state_mode, spec.idle_timeout_s,
            spec.warmup_s, spec.healthy_threshold) == (0, 18080, StateMode.SNAPSHOT, 600.0,
                                                       2.5, 2)
    assert record.tag.checksum == spec.checksum() != SPEC.checksum()
    assert record.changes == {"fixes": ["f"]}
    assert decode(VersionRecord, encode(record)) == record


def test_a_legacy_record_at_the_defaults_keeps_its_checksum() -> None:
    raw = legacy_record(service_port=0, state_mode="none", idle_timeout_s=0.0, warmup_s=0.0,
                        healthy_threshold=1, port_assigned=False)
    record = decode(VersionRecord, raw)
    assert record.tag.spec == SPEC and record.tag.checksum == SPEC.checksum()
    assert "service_port" not in json.loads(encode(record))
