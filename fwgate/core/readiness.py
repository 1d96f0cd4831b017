"""READY once, and what follows it. Pure; the clock is passed in.

Before READY the gate waits on the compat verdict. Rules k3s would die on: the gate
exits 3 (k3s is held back); a guard gates nothing and is READY whatever it found. Else
READY=1, then exit 0, or keep guarding (`fwgate guard`, `run --watch`,
`after_ready.mode: watch`). The gate's timeout with `on_timeout: proceed` makes the
READY degraded; a SIGINT before READY exits 130."""
from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from ..errors import EXIT_OK
from .record import checking_status, ready_status

if TYPE_CHECKING:
    from ..compat.policy import Verdict


class Role(enum.Enum):
    GATE = "gate"     # `fwgate run`: stages, compat, READY (then exit, or guard)
    GUARD = "guard"   # `fwgate guard`: compat, READY at once, then guard for good


class Then(enum.Enum):
    """What a verdict before READY leads to."""
    INCOMPATIBLE = "exit 3: k3s would die on the rules"
    EXIT = "READY, then exit 0"
    GUARD = "READY, then guard"


class Readiness:
    def __init__(self, role: Role, keep_guarding: bool, started: float):
        self.role = role
        self.keep_guarding = role is Role.GUARD or keep_guarding
        self.started = started
        self.sent = False                  # READY=1 went out
        self.timed_out: str | None = None  # on_timeout: proceed, and why: READY degraded

    @property
    def gates(self) -> bool:
        return self.role is Role.GATE

    def restart(self) -> None:
        """A new config: a timeout of the old one no longer degrades READY."""
        self.timed_out = None

    def after_verdict(self, verdict: Verdict, now: float) -> tuple[Then, str]:
        """What follows the verdict before READY, and the status line that says it.
        Anything but INCOMPATIBLE sends READY: `sent` from then on."""
        if verdict.exit_code and self.gates:
            return Then.INCOMPATIBLE, verdict.summary
        self.sent = True
        status = ready_status(not self.gates, verdict, self.timed_out, now - self.started)
        return (Then.GUARD if self.keep_guarding else Then.EXIT), status

    def stop_code(self, signal: str) -> int:
        return 130 if not self.sent and signal == "SIGINT" else EXIT_OK

    def checking_status(self) -> str:
        return checking_status(self.timed_out)
