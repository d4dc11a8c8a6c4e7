"""Exit codes and the one-line error messages of the CLI.

0 success; 1 an error (the coordinator refused, or none answered); 2 bad usage (flags or
arguments the CLI itself rejects, and typer's own usage errors); 3 a watched rollout ended
rolled back, failed or aborted.
"""

from __future__ import annotations

from enum import IntEnum

from common.errors import InvalidArgument, LandlordError
from coordinator.cli.client import CallFailed

__all__ = [
    "FAILED_PHASES",
    "TERMINAL_PHASES",
    "ExitCode",
    "error_line",
    "exit_code_for_error",
    "exit_code_for_phase",
    "is_terminal",
]

TERMINAL_PHASES = frozenset({"promoted", "rolled_back", "failed", "aborted"})
FAILED_PHASES = frozenset({"rolled_back", "failed", "aborted"})


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    ROLLOUT_FAILED = 3


def is_terminal(phase: str) -> bool:
    return phase in TERMINAL_PHASES


def exit_code_for_phase(phase: str) -> ExitCode:
    """3 when a rollout ended without promoting its new version, else 0."""
    return ExitCode.ROLLOUT_FAILED if phase in FAILED_PHASES else ExitCode.OK


def exit_code_for_error(err: BaseException) -> ExitCode:
    """2 for input the CLI rejected itself, 1 for everything else."""
    if isinstance(err, InvalidArgument):
        return ExitCode.USAGE
    return ExitCode.ERROR


def error_line(err: CallFailed | LandlordError) -> str:
    """``landlord: error: <what failed>: <details>`` on one line."""
    text = str(err) if isinstance(err, CallFailed) else err.message
    return "landlord: error: " + " ".join(text.split())
