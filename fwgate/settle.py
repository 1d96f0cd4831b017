"""The rule-stability probe as a pure state machine. The clock is passed in.

The watched scope has settled when no relevant nf_tables event arrived for
the whole window *and* its digest at the end equals the digest taken after
the last change. The second half guards what events alone cannot: changes
made before we subscribed, and events the kernel dropped without telling.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Baseline:
    genid: int
    digest: str


class QuietWindow:
    """When the watched scope last changed, and what it looked like since."""

    def __init__(self, now: float):
        self.last_change = now   # the window restarts here
        self.changes = 0         # relevant changes seen
        self.resyncs = 0         # times events were lost and we started over
        self.baseline: Baseline | None = None  # state after last_change, once dumped

    def change(self, now: float, count: bool = True) -> None:
        """A relevant event: restart the window; the old baseline is stale.
        count=False: a change we made ourselves, whose event will be counted."""
        self.last_change = max(self.last_change, now)
        self.changes += count
        self.baseline = None

    def lost_events(self, now: float) -> None:
        """ENOBUFS or a gap: anything may have changed, so count it as a change."""
        self.resyncs += 1
        self.change(now)

    def set_baseline(self, genid: int, digest: str) -> None:
        self.baseline = Baseline(genid, digest)

    def quiet_for(self, now: float) -> float:
        return max(0.0, now - self.last_change)

    def unchanged_since_baseline(self, genid: int) -> bool:
        """The cheap test: no transaction at all committed since the baseline."""
        return self.baseline is not None and self.baseline.genid == genid

    def confirm(self, now: float, genid: int, digest: str) -> bool:
        """End-of-window check. True: the scope is as it was after the last change.

        False: it changed behind our back; the window restarts now with the
        new state as its baseline."""
        if self.baseline is not None and self.baseline.digest == digest:
            self.baseline = Baseline(genid, digest)
            return True
        self.change(now)
        self.baseline = Baseline(genid, digest)
        return False
