"""Compat runs: one at a time, and why each one runs. Pure; the clock is passed in.

A VERDICT run judges the rules (before READY: READY or exit 3; after it: the guard's
report). A SWEEP run only repairs what events cannot point at: rules there before we
subscribed, or added while events were lost. After READY a verdict runs once the
watched scope has been quiet for a window after a change, or at the latest
BUSY_WINDOWS windows after the oldest unchecked change (kube-router restores ip filter
at every sync: a busy node may never be quiet). A run that comes back "the ruleset
moved under the repair" is run again while the retry policy allows; then the rules
settle again, at most MAX_SETTLE_ROUNDS times before READY."""
from __future__ import annotations

import enum
import math

from .retry import MOVED_RULESET, RetryPolicy

BUSY_WINDOWS = 3
MAX_SETTLE_ROUNDS = 3


class Run(enum.Enum):
    VERDICT = "verdict"
    SWEEP = "sweep"


class CompatRuns:
    def __init__(self, now: float, policy: RetryPolicy = MOVED_RULESET):
        self.policy = policy
        self.in_flight: Run | None = None
        self.sweep_wanted = False
        self.refused = 0                 # runs in a row whose repair the kernel refused
        self.settle_rounds = 0           # times the rules had to settle again
        self.not_before = now            # after a refused run or a failure: let it settle
        self.unchecked_since: float | None = None  # after READY: first change not checked

    def restart(self, now: float) -> None:
        """A new config: the rounds start over (a run in flight still answers)."""
        self.settle_rounds = 0
        self.not_before = now
        self.unchecked_since = None

    @property
    def settling(self) -> bool:
        """After READY: a change is not checked yet."""
        return self.unchecked_since is not None

    @property
    def idle(self) -> bool:
        return self.in_flight is None

    def want_sweep(self, wanted: bool = True) -> None:
        self.sweep_wanted = wanted

    def start_sweep(self, repair_busy: bool) -> bool:
        if self.sweep_wanted and self.idle and not repair_busy:
            self.sweep_wanted = False
            self.in_flight = Run.SWEEP
            return True
        return False

    def start_verdict(self) -> bool:
        """A verdict run now, unless one is out (the caller has said it is time)."""
        if self.idle:
            self.unchecked_since = None
            self.in_flight = Run.VERDICT
            return True
        return False

    def finished(self) -> Run | None:
        run, self.in_flight = self.in_flight, None
        return run

    def answered(self, moved: bool) -> tuple[Run | None, bool]:
        """A run came back: which one, and whether it runs again at once (the ruleset
        `moved` under its repair and the policy allows another try; still in flight)."""
        run = self.finished()
        again = self.refused_again(moved)
        if again:
            self.in_flight = run
        return run, again

    def wait(self, now: float, settle: float) -> None:
        """Before READY, with no stage to settle again: the verdict runs a window later."""
        self.not_before = now + settle

    def refused_again(self, moved: bool) -> bool:
        """A run came back; True when its repair was refused and it may run once more."""
        if not moved:
            self.refused = 0
            return False
        self.refused += 1
        if self.policy.again(self.refused):
            return True
        self.refused = 0
        return False

    def settle_again(self) -> bool:
        """The ruleset moved under every attempt: True while another round is allowed."""
        self.settle_rounds += 1
        return self.settle_rounds <= MAX_SETTLE_ROUNDS

    def failed(self, now: float, settle: float) -> None:
        """After READY the run could not finish: check again a window later."""
        self.in_flight = None
        self.not_before = now + settle

    def check_due(self) -> float:
        """Before READY: when the verdict may run."""
        return self.not_before if self.idle else math.inf

    def unchecked(self, now: float) -> None:
        if self.unchecked_since is None:
            self.unchecked_since = now

    def guard_due(self, last_change: float, settle: float) -> float:
        """After READY: when the window since the last change ends, or when the oldest
        unchecked change has waited long enough on a scope that is never quiet."""
        if self.unchecked_since is None or not self.idle:
            return math.inf
        return min(max(last_change + settle, self.not_before),
                   max(self.unchecked_since + BUSY_WINDOWS * settle, self.not_before))
