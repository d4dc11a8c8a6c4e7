"""RunCheck end to end on one host: the coordinator's CheckCalls.run_check sends it over
a real gRPC agent stream, the agent's stream session hands it to the stream adapter,
Docker runs it in a demo-app container, and the exit code and output come back in a
report.

The coordinator side is a stand-in servicer (no etcd, no leadership) that speaks through
the coordinator's own session, conversion and FleetControl code."""

from __future__ import annotations

import asyncio

from agent_fixtures import AgentHarness, http_get, make_spec
from stand_in import connected, fleet_control

from common.resources import Resources
from coordinator.state.cluster_state import ClusterState, Versioned
from coordinator.state.keys import KeyLayout
from coordinator.state.records import InstanceRecord


async def test_a_check_sent_by_the_coordinator_runs_in_docker_and_its_output_returns(
        harness: AgentHarness) -> None:
    agent = await harness.agent()
    spec = make_spec("check-stream-1")
    assert (await agent.start_instance(spec)).state == "running"
    host_id = agent.config.host_id

    state = ClusterState(KeyLayout())
    state.instances[spec.instance_id] = Versioned(InstanceRecord(
        spec.instance_id, "test", "demo", "1.0.0", "blue", host_id, spec.port,
        Resources(cpu=1.0, memory=128 << 20), 0.0), 1)
    control = fleet_control(state)
    async with connected(agent, control):
        ok, failing, slow = await asyncio.gather(
            control.run_check(spec.instance_id, ["sh", "-c", "echo v=$VERSION"], 10.0),
            control.run_check(spec.instance_id, ["sh", "-c", "echo no >&2; exit 4"], 10.0),
            control.run_check(spec.instance_id, ["sleep", "60"], 1.0),
        )
        assert (ok.ok, ok.exit_code, ok.stdout, ok.error) == (True, 0, "v=1.0.0\n", "")
        assert (failing.ok, failing.exit_code, failing.stderr) == (True, 4, "no\n")
        assert not slow.ok and slow.timed_out and slow.error == "timed out after 1s (killed)"
        missing = await control.run_check(spec.instance_id, ["no-such-binary"], 5.0)
        assert missing.ok and missing.exit_code != 0
        assert http_get(spec.port, "/")[0] == 200  # the app kept serving throughout
