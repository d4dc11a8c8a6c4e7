"""Generated requests for every Admin RPC against a live coordinator: no INTERNAL or UNKNOWN,
no crash, and etcd unchanged by every refusal (tests/fuzz/harness.py says how)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from common.gen.landlord.v1 import admin_pb2
from tests.e2e.cluster import Cluster
from tests.fuzz.conftest import CI_EXAMPLES, baseline, examples
from tests.fuzz.harness import AdminTarget, Tally
from tests.fuzz.messages import Hints, methods_of, request_strategy

ADMIN = methods_of(admin_pb2.DESCRIPTOR.services_by_name["Admin"])
DEPLOY_WEIGHT = 4
"""Deploy is drawn this many times as often as another method: it has the most checks
behind its first ones (admission, dependencies, placement, the one-active-rollout rule)."""
WEIGHTED = [*ADMIN, *[m for m in ADMIN if m.name == "Deploy"] * (DEPLOY_WEIGHT - 1)]


def test_generated_admin_requests(fuzz_cluster: tuple[Cluster, Hints],
                                  capsys: pytest.CaptureFixture[str]) -> None:
    cluster, hints = fuzz_cluster
    tally = Tally()
    target = AdminTarget(cluster, tally, baseline())
    cases = st.sampled_from(WEIGHTED).flatmap(
        lambda m: st.tuples(st.just(m), request_strategy(m, hints)))

    @settings(max_examples=examples("FUZZ_EXAMPLES", CI_EXAMPLES), deadline=None,
              database=None, phases=(Phase.generate,),
              suppress_health_check=list(HealthCheck))
    @given(cases)
    def one_request(case: tuple[Any, Any]) -> None:
        method, request = case
        target.call(method, request)

    try:
        one_request()
    finally:
        target.close()
        with capsys.disabled():
            print("\n" + tally.summary("fuzz: generated admin requests"))
    assert tally.sent >= examples("FUZZ_EXAMPLES", CI_EXAMPLES)
    assert not tally.problems(), tally.summary("problems")
