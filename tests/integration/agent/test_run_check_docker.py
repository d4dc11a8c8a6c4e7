"""RunCheck on real Docker: a command run with ``docker exec`` in a demo-app container
through the agent's host port, as the coordinator's stream would send it (exit codes,
capped output, a timeout that kills the command and leaves the instance serving)."""

from __future__ import annotations

import time

import pytest
from agent_fixtures import AgentHarness, http_get, make_spec

from agent.host_port import HostPort
from agent.stream_client import CommandOutput, RunCheck, command_from_pb
from common.errors import NotFound
from common.gen.landlord.v1 import agent_pb2
from tests.support import async_eventually

LIST_PROCESSES = (
    "python3", "-c",
    "import os\n"
    "for p in os.listdir('/proc'):\n"
    "    if p.isdigit():\n"
    "        try: print(open(f'/proc/{p}/cmdline').read().replace(chr(0), ' '))\n"
    "        except OSError: pass\n",
)


async def _port(harness: AgentHarness, instance_id: str) -> HostPort:
    agent = await harness.agent()
    spec = make_spec(instance_id)
    view = await agent.start_instance(spec)
    assert view.state == "running", view
    port = HostPort(agent, None)
    await port.prepare()
    return port


async def _run(port: HostPort, instance_id: str, argv: tuple[str, ...],
               timeout: float = 10.0) -> CommandOutput:
    """The command as the coordinator sends it: protobuf in, the stream's command out."""
    pb = agent_pb2.Command(command_id="check:1", run_check=agent_pb2.RunCheck(
        instance_id=instance_id, argv=list(argv)))
    pb.run_check.timeout.FromMilliseconds(round(timeout * 1000))
    command = command_from_pb(pb)
    assert isinstance(command, RunCheck)
    out = await port.execute(command)
    assert out is not None
    return out


async def test_commands_run_in_the_container_with_exit_code_and_output(
        harness: AgentHarness) -> None:
    port = await _port(harness, "check-ok-1")
    ok = await _run(port, "check-ok-1", ("sh", "-c", "echo version=$VERSION; id -u"))
    assert (ok.exit_code, ok.error, ok.stderr, ok.truncated) == (0, "", "", False)
    assert ok.stdout.splitlines()[0] == "version=1.0.0"

    failing = await _run(port, "check-ok-1", ("sh", "-c", "echo not ready >&2; exit 3"))
    assert (failing.exit_code, failing.stderr, failing.error) == (3, "not ready\n", "")

    # the container's filesystem is read-only: a check sees the same container as the app
    write = await _run(port, "check-ok-1", ("sh", "-c", "touch /app/x"))
    assert write.exit_code != 0 and "Read-only" in write.stderr

    big = await _run(port, "check-ok-1",
                     ("python3", "-c", "import sys; print('x' * 100000); "
                      "print('e' * 9000, file=sys.stderr)"))
    assert big.exit_code == 0 and big.truncated
    assert big.stdout == "x" * 4096 and big.stderr == "e" * 4096

    missing = await _run(port, "check-ok-1", ("no-such-binary",))
    assert missing.exit_code != 0 and not missing.timed_out
    print(f"missing binary: exit {missing.exit_code}, output "
          f"{(missing.stdout + missing.stderr).strip()[:120]!r}")

    with pytest.raises(NotFound):
        await _run(port, "not-here", ("true",))


async def test_a_command_over_its_timeout_is_killed_and_the_instance_keeps_serving(
        harness: AgentHarness) -> None:
    port = await _port(harness, "check-slow-1")
    record = port.service.records.get("check-slow-1")
    started = time.monotonic()
    slow = await _run(port, "check-slow-1",
                      ("sh", "-c", "echo started; sleep 120; echo never"), timeout=1.0)
    took = time.monotonic() - started
    print(f"timed-out check returned after {took:.2f}s (timeout 1 s)")
    assert slow.timed_out and slow.error == "timed out after 1s (killed)"
    assert slow.exit_code == -1 and slow.stdout == "started\n"

    async def sleep_gone() -> bool:
        listing = await _run(port, "check-slow-1", LIST_PROCESSES)
        assert listing.exit_code == 0, listing
        return "sleep 120" not in listing.stdout and "app.py" in listing.stdout

    await async_eventually(sleep_gone, timeout=10, interval=0.2)
    assert http_get(record.spec.port, "/")[0] == 200
    assert port.service.instance("check-slow-1").state == "running"
