"""When to take the next snapshot (a Dump). Pure; the clock is passed in.

Events say only that something changed; the snapshot says what. Dumping on every
event would starve the loop during a burst, so the pacer waits for the stream to
pause (DEBOUNCE) and spaces dumps by their own cost (PACE: at most a third of the
time dumping). One dump at a time; a dump taken before a transaction we have read
the events of is not current, and the facts stay stale."""
from __future__ import annotations

import math

DEBOUNCE = 0.02      # dump once the event stream has paused this long
PACE = 2.0           # after a dump that took t, wait 2t


class DumpPacer:
    def __init__(self, now: float):
        self.stale = True          # the facts lag behind the ruleset
        self.in_flight = False
        self.last_event = -math.inf
        self.next_dump = now
        self.rules_since = now     # when the state the last snapshot shows began

    def changed(self, now: float) -> None:
        """A relevant event: the facts are stale, the state began anew."""
        self.stale, self.last_event, self.rules_since = True, now, now

    def invalidate(self) -> None:
        """Our own change: the facts are stale, but nothing foreign happened."""
        self.stale = True

    def ask_now(self, now: float) -> None:
        """A dump is wanted at once (the digest must confirm a quiet window)."""
        self.stale, self.next_dump = True, now

    def due(self) -> float:
        if not self.stale or self.in_flight:
            return math.inf
        return max(self.next_dump, self.last_event + DEBOUNCE)

    def start(self, now: float) -> bool:
        """True (and one dump in flight) when a dump is due now."""
        if now >= self.due():
            self.in_flight = True
            return True
        return False

    def dumped(self, now: float, cost: float, current: bool) -> None:
        self.in_flight = False
        self.next_dump = now + PACE * cost
        if current:
            self.stale = False

    def failed(self) -> None:
        self.in_flight = False
