"""The rule-stability probe's quiet window. Pure; the clock is passed in.

The watched scope has settled when no relevant nf_tables event arrived for the
whole window *and* its state at the end is the state taken after the last
change: the same generation id (nothing at all committed since) or else the same
digest. The second half guards what events alone cannot: changes made before we
subscribed, and events the kernel dropped without telling.
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
        self.changes = 0         # relevant foreign transactions seen
        self.baseline: Baseline | None = None  # the state after last_change, once dumped

    def change(self, now: float, count: bool = True) -> None:
        """A relevant foreign change: restart the window; the old baseline is stale."""
        self.last_change = max(self.last_change, now)
        self.changes += count
        self.baseline = None

    def own_change(self) -> None:
        """A change fwgate committed itself (a repair): the state moved, so the
        baseline must be taken again, but the window does not restart."""
        self.baseline = None

    def lost_events(self, now: float) -> None:
        """ENOBUFS: anything may have changed, so count it as a change."""
        self.change(now)

    def set_baseline(self, genid: int, digest: str) -> None:
        self.baseline = Baseline(genid, digest)

    def quiet_for(self, now: float) -> float:
        return max(0.0, now - self.last_change)

    def unchanged_since_baseline(self, genid: int) -> bool:
        """The cheap test: no transaction at all committed since the baseline."""
        return self.baseline is not None and self.baseline.genid == genid

    def same_as_baseline(self, genid: int, digest: str) -> bool:
        """The end-of-window test by digest (the generation moved: did the state?).
        True moves the baseline to this generation."""
        same = self.baseline is not None and self.baseline.digest == digest
        if same:
            self.baseline = Baseline(genid, digest)
        return same

    def change_behind_our_back(self, now: float, genid: int, digest: str) -> None:
        """The digest moved without an event we saw: restart, from this state."""
        self.change(now)
        self.baseline = Baseline(genid, digest)
