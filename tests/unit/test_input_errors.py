"""Every parser turns any bad input into a Landlord error, never a bare Python one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.canary import validate_steps
from common.clock import FakeClock
from common.dependencies import parse_dependency, resolve
from common.errors import LandlordError
from common.latency import LatencySketch
from common.lifecycle import InstanceState, LifecycleRecord, Transition
from common.recovery import detect_memory_leak
from common.resources import Resources, parse_bandwidth, parse_bytes, parse_cpu
from common.rollout_policy import Window
from common.semantic_versions import parse_version
from common.unit_spec import HealthCheck, UnitSpec
from common.versions import ChangeSet, VersionTag, plan_publish

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)

SPEC = UnitSpec(
    apartment="shop",
    unit="web",
    version="1.0.0",
    image="sha256:" + "a" * 64,
    port=80,
    dependencies=("db@^1",),
)
RECORD = LifecycleRecord.new("1.0.0", FakeClock())
RECORD.transition(InstanceState.INITIALIZING, "start", 1.0)
Parser = Callable[[object], object]


def entry(parser: Callable[[Any], object], valid: object) -> tuple[Parser, object]:
    return parser, valid


# name -> (parser, a valid input to mutate)
PARSERS: dict[str, tuple[Parser, object]] = {
    "parse_cpu": entry(parse_cpu, "500m"),
    "parse_bytes": entry(parse_bytes, "256Mi"),
    "parse_bandwidth": entry(parse_bandwidth, "10Mbit"),
    "parse_version": entry(parse_version, "1.2.3"),
    "parse_dependency": entry(lambda v: parse_dependency(v, "shop"), "db@^1"),
    "validate_steps": entry(validate_steps, [5, 25, 100]),
    "resolve": entry(lambda v: resolve(["db@*"], v, "shop"), {"db": {"1.0.0": []}}),
    "memory samples": entry(detect_memory_leak, [(0.0, 1), (400.0, 2)]),
    "Resources": entry(Resources.from_dict, {"cpu": "1", "memory": "1Gi"}),
    "LatencySketch": entry(LatencySketch.from_dict, LatencySketch.of([1.0, 9.0]).to_dict()),
    "Transition": entry(Transition.from_dict, RECORD.history[0].to_dict()),
    "LifecycleRecord": entry(LifecycleRecord.from_dict, RECORD.to_dict()),
    "Window": entry(Window.from_dict, Window(requests=3, errors=1).to_dict()),
    "HealthCheck": entry(HealthCheck.from_dict, HealthCheck().to_dict()),
    "UnitSpec": entry(UnitSpec.from_dict, SPEC.to_dict()),
    "ChangeSet": entry(ChangeSet.from_dict, {"fixes": ["x"]}),
    "VersionTag": entry(
        VersionTag.from_dict,
        plan_publish([], SPEC, ChangeSet(), 1.0, {"db": {"1.0.0": []}}).tag.to_dict(),
    ),
}


@st.composite
def mutations(draw: st.DrawFn, valid: object) -> object:
    """A random value, or the valid input with one part replaced or removed."""
    if isinstance(valid, dict) and valid and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(valid)))
        mutated = dict(valid)
        if draw(st.booleans()):
            del mutated[key]
        else:
            mutated[key] = draw(json_values)
        return mutated
    if isinstance(valid, list) and valid and draw(st.booleans()):
        index = draw(st.integers(0, len(valid) - 1))
        return [*valid[:index], draw(json_values), *valid[index + 1 :]]
    return draw(json_values)


@pytest.mark.parametrize("name", sorted(PARSERS))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_parsers_raise_only_landlord_errors(name: str, data: st.DataObject) -> None:
    parser, valid = PARSERS[name]
    parser(valid)  # the unmutated input parses
    value = data.draw(mutations(valid))
    try:
        parser(value)
    except LandlordError as err:
        assert str(err)
