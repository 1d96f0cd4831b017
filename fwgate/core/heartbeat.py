"""Two clocks the machine keeps besides the window. Pure.

The heartbeat: a running gate or guard publishes its state at least every HEARTBEAT
seconds (`fwgate status` calls a state older than a few of them stale). The Netbird
question: what netbird.service runs with (its PATH's iptables, its firewall switch)
is asked at start, whenever Netbird (re)creates its table, after a reload and, while
guarding, every NETBIRD_RECHECK seconds (an iptables installed or removed, a drop-in)."""
from __future__ import annotations

import math

HEARTBEAT = 10.0
NETBIRD_RECHECK = 300.0


class Heartbeat:
    def __init__(self, now: float, every: float = HEARTBEAT):
        self.every = every
        self.next_at = now + every

    def due(self, alive: bool) -> float:
        return self.next_at if alive else math.inf

    def is_due(self, now: float) -> bool:
        return now >= self.next_at

    def beat(self, now: float) -> None:
        self.next_at = now + self.every


class NetbirdQuestion:
    def __init__(self) -> None:
        self.wanted = True            # asked at start
        self.explain_wanted = False   # why Netbird wrote native rules: once per run
        self.explained = False
        self.next_read = math.inf

    def ask(self) -> None:
        self.wanted = True

    def explain(self) -> None:
        self.explain_wanted = not self.explained

    def due(self) -> float:
        return self.next_read

    def tick(self, now: float) -> None:
        if now >= self.next_read:
            self.next_read, self.wanted = math.inf, True

    def take(self) -> bool:
        """True once per question: a ReadNetbird should go out."""
        if self.wanted or self.explain_wanted:
            self.wanted = False
            return True
        return False

    def answered(self, now: float, recheck: bool) -> bool:
        """The answer came; True when it should also explain the native fallback."""
        if recheck:
            self.next_read = now + NETBIRD_RECHECK
        if self.explain_wanted:
            self.explain_wanted, self.explained = False, True
            return True
        return False
