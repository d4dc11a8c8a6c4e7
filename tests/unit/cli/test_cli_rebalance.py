"""`landlord units rebalance` lines (coordinator/cli/rebalance.py)."""

from __future__ import annotations

from common.gen.landlord.v1 import admin_pb2
from coordinator.cli.rebalance import rebalance_lines, start_lines


def status(state: str, moved_count: int = 0, moving: str = "", message: str = ""
           ) -> admin_pb2.RebalanceStatus:
    return admin_pb2.RebalanceStatus(apartment="shop", unit="web", state=state,
                                     moved_count=moved_count, moving=moving, message=message)


def test_the_plan_then_the_progress_in_a_line_each() -> None:
    started = admin_pb2.RebalanceStarted(status=status("running"), started=True, plan=[
        admin_pb2.RebalanceMove(instance_id="w2", unit="shop/web", from_host="h1",
                                to_host="h2")])
    response = admin_pb2.RebalanceUnitsResponse(rebalances=[started])
    assert start_lines(response) == ["rebalancing shop/web: 1 move(s)", "  w2 h1 -> h2"]
    again = admin_pb2.RebalanceStarted(status=status("running"), started=False)
    assert start_lines(admin_pb2.RebalanceUnitsResponse(rebalances=[again])) == [
        "a rebalance of shop/web is already running; following it"]
    assert start_lines(admin_pb2.RebalanceUnitsResponse()) == [
        "nothing to rebalance: every unit is evenly spread"]
    done = status("done", moved_count=1, message="evenly spread: 1 instance(s) moved")
    assert rebalance_lines(done) == [
        "shop/web: done, 1 moved - evenly spread: 1 instance(s) moved"]
    moving = status("running", moving="shop/web w2 -> w9 on h2 (starting)")
    assert rebalance_lines(moving) == [
        "shop/web: running, 0 moved; moving shop/web w2 -> w9 on h2 (starting)"]
