"""The agent's output streams: chunks come in order per command and end with the end chunk,
a report takes a bounded share from every stream in turn, a full queue holds its reader,
cancel stops the reader and drops what was queued, errors end the stream saying why, and
the command queue acknowledges output commands at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.runtime.protocol import OutputPiece
from agent.stream.command_queue import CommandQueue
from agent.stream.output_streams import MAX_STREAMS, QUEUED, OutputStreams
from common.errors import NotFound
from common.stream_commands import CancelOutput, Command, ExecStream, ReadLogs
from common.stream_convert import command_to_pb
from common.stream_messages import OutputChunk


class Source:
    """Output per instance id: a list of pieces, or an exception, or endless output."""

    def __init__(self, pieces: dict[str, list[OutputPiece] | Exception]) -> None:
        self.pieces = pieces
        self.closed: list[str] = []
        self.sent: dict[str, int] = {}

    async def output(self, command: ReadLogs | ExecStream) -> AsyncIterator[OutputPiece]:
        found = self.pieces.get(command.instance_id, [])
        if isinstance(found, Exception):
            raise found
        try:
            if command.instance_id.startswith("endless"):
                while True:
                    self.sent[command.instance_id] = self.sent.get(command.instance_id, 0) + 1
                    yield OutputPiece(b"x" * 100)
            for piece in found:
                yield piece
        finally:
            self.closed.append(command.instance_id)


async def until(check: Callable[[], object], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110  # polling in-process state
            await asyncio.sleep(0.005)


def drain(streams: OutputStreams, budget: int = 1 << 30) -> list[OutputChunk]:
    return list(streams.take(budget))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.binary(min_size=1, max_size=50), max_size=30), min_size=1,
                max_size=5))
def test_every_stream_arrives_whole_in_order_and_ends(outputs: list[list[bytes]]) -> None:
    async def run() -> dict[str, list[OutputChunk]]:
        source = Source({f"i{n}": [*map(OutputPiece, data), OutputPiece(end=True, exit_code=n)]
                         for n, data in enumerate(outputs)})
        streams = OutputStreams(source.output, lambda: None)
        for n in range(len(outputs)):
            streams.start(f"c{n}", ExecStream(f"i{n}", ("true",)))
        got: dict[str, list[OutputChunk]] = {}
        while streams.active or streams.pending:
            for chunk in streams.take(budget=120):
                got.setdefault(chunk.command_id, []).append(chunk)
            await asyncio.sleep(0)
        return got

    got = asyncio.run(run())
    for n, data in enumerate(outputs):
        chunks = got[f"c{n}"]
        assert [c.data for c in chunks[:-1]] == data
        assert chunks[-1].end and chunks[-1].exit_code == n


async def test_a_report_takes_a_bounded_share_from_every_stream() -> None:
    source = Source({})
    streams = OutputStreams(source.output, lambda: None)
    streams.start("a", ReadLogs("endless-a", follow=True))
    streams.start("b", ReadLogs("endless-b", follow=True))
    await until(lambda: streams.pending and source.sent.get("endless-b", 0) > 1)
    taken = streams.take(budget=250)
    assert {c.command_id for c in taken} == {"a", "b"}
    assert sum(len(c.data) for c in taken) <= 250 + 100
    # a full queue holds its reader: no more is read than the queue and one piece in hand
    await asyncio.sleep(0.05)
    assert source.sent["endless-a"] <= QUEUED + len([c for c in taken if c.command_id == "a"]) + 2
    streams.cancel("a")
    await until(lambda: "endless-a" in source.closed)
    assert all(c.command_id == "b" for c in drain(streams))
    streams.close()
    await until(lambda: "endless-b" in source.closed)


async def test_errors_end_the_stream_saying_why() -> None:
    source = Source({"gone": NotFound("instance gone does not run on this host")})
    streams = OutputStreams(source.output, lambda: None)
    streams.start("c1", ReadLogs("gone"))
    await until(lambda: streams.pending)
    [end] = drain(streams)
    assert end.end and end.error == "instance gone does not run on this host"
    assert streams.active == 0


async def test_too_many_streams_are_refused_at_once() -> None:
    streams = OutputStreams(Source({}).output, lambda: None)
    for n in range(MAX_STREAMS):
        streams.start(f"c{n}", ReadLogs(f"endless-{n}", follow=True))
    streams.start("one-more", ReadLogs("endless-x", follow=True))
    refused = [c for c in drain(streams) if c.command_id == "one-more"]
    assert refused[-1].end and "serves 32 output streams already" in refused[-1].error
    streams.close()


class Endpoint:
    def __init__(self, source: Source) -> None:
        self.output = source.output

    async def execute(self, command: object) -> None:
        return None


async def test_the_command_queue_acknowledges_output_commands_and_reports_their_output() -> None:
    source = Source({"i1": [OutputPiece(b"hello\n"), OutputPiece(b"oops\n", stderr=True),
                            OutputPiece(end=True, exit_code=3)]})
    queue = CommandQueue(Endpoint(source))  # type: ignore[arg-type]
    runner = asyncio.create_task(queue.run())
    try:
        queue.offer(command_to_pb(Command("out:1", ExecStream("i1", ("sh",)))))
        queue.offer(command_to_pb(Command("out:2", ReadLogs("endless-2", follow=True))))
        await until(lambda: queue.has_news)
        acks, results = queue.take()
        assert set(acks) == {"out:1", "out:2"} and all(r.ok for r in results)
        await until(lambda: queue.outputs.pending)
        queue.offer(command_to_pb(Command("cancel:1", CancelOutput("out:2"))))
        await until(lambda: "endless-2" in source.closed)
        chunks = [c for c in queue.outputs.take() if c.command_id == "out:1"]
        assert [(c.data, c.stderr) for c in chunks[:2]] == [(b"hello\n", False),
                                                             (b"oops\n", True)]
        assert chunks[-1].end and chunks[-1].exit_code == 3
        queue.reset()  # the session ended: nothing left running
        assert queue.outputs.active == 0
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


def test_exec_sends_the_command_without_the_separator() -> None:
    from typer.testing import CliRunner

    import coordinator.cli.instance_output as output
    from coordinator.cli.main import app

    seen: list[list[str]] = []

    async def fake(ctx: object, method: str, request: object, what: str) -> int:
        seen.append(list(request.argv))  # type: ignore[attr-defined]
        return 0

    original, output._print = output._print, fake
    try:
        result = CliRunner().invoke(app, ["instances", "exec", "i1", "--", "python3", "-c",
                                          "print(1)"])
    finally:
        output._print = original
    assert result.exit_code == 0 and seen == [["python3", "-c", "print(1)"]]
