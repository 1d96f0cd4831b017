"""Which stage the gate is at, and since when each condition has held. Pure.

Each condition of each stage is evaluated on the facts after every change to them; a
stage is done when all its conditions hold and the quiet window has run (the machine
asks the window). A condition of an earlier stage that stops holding sends the gate
back to that stage. A rule condition holds since the state the snapshot shows began,
not since we looked."""
from __future__ import annotations

import math

from ..config import Config, Stage
from ..model import Facts
from ..timespan import format_timespan
from .conditions import evaluate, reads_rules, skipped
from .window import QuietWindow


class StageTracker:
    def __init__(self, stages: tuple[Stage, ...], now: float):
        self.stages = stages
        self.index = 0
        self.started = now                 # when the current stage began
        self.held_since: dict[tuple[int, int], float] = {}
        self.waiting_for: dict[tuple[int, int], str] = {}
        self.announced_held = False

    @property
    def done(self) -> bool:
        return self.index >= len(self.stages)

    @property
    def current(self) -> Stage | None:
        return None if self.done else self.stages[self.index]

    def intro(self) -> str:
        if self.done:
            return "compat"
        return f"stage {self.index + 1}/{len(self.stages)} {self.stages[self.index].name}"

    def observe(self, facts: Facts, now: float, rules_since: float) -> str | None:
        """Re-evaluate every condition. When one of an earlier stage stopped holding, go
        back to that stage and say what it waits for (else None)."""
        back_to = None
        for si, stage in enumerate(self.stages):
            for ci, cond in enumerate(stage.conditions):
                key = (si, ci)
                holds, waiting = evaluate(cond, facts)
                if holds:
                    self.held_since.setdefault(key, rules_since if reads_rules(cond) else now)
                    self.waiting_for.pop(key, None)
                else:
                    if key in self.held_since and si < self.index and back_to is None:
                        back_to = (si, waiting)
                    self.held_since.pop(key, None)
                    self.waiting_for[key] = waiting
        if back_to is None:
            return None
        self.index, self.started = back_to[0], now
        self.announced_held = False
        return back_to[1]

    # -- the journal's lines ------------------------------------------------------------

    def skipped_line(self, why: str) -> str:
        return f"{self.intro()}: skipped: {why}"

    def held_line(self) -> str:
        return f"{self.intro()}: conditions hold, settling"

    def settled_line(self, config: Config) -> str:
        settle = format_timespan(config.stage_settle(self.current))
        return f"{self.intro()}: settled, quiet for {settle}"

    def back_line(self, waiting: str) -> str:
        return f"back to {self.intro()}: a condition stopped holding ({waiting})"

    def skip_reason(self, facts: Facts) -> str | None:
        return None if self.done else skipped(self.stages[self.index], facts)

    def held(self) -> bool:
        """Every condition of the current stage holds."""
        stage = self.current
        return stage is not None and all((self.index, ci) in self.held_since
                                         for ci in range(len(stage.conditions)))

    def first_hold(self) -> bool:
        """True once per stage visit: the moment to journal stage-held."""
        if self.announced_held:
            return False
        self.announced_held = True
        return True

    def waiting(self) -> str | None:
        stage = self.current
        if stage is None:
            return None
        return next((self.waiting_for[(self.index, ci)] for ci in range(len(stage.conditions))
                     if (self.index, ci) in self.waiting_for), None)

    def status(self, now: float, window: QuietWindow, config: Config) -> str:
        """What the current stage waits for, in words a person reads."""
        waiting = self.waiting()
        if waiting:
            return f"{self.intro()}: {waiting}"
        settle = config.stage_settle(self.current)
        quiet = min(window.quiet_for(now), settle)
        changes = window.changes
        return (f"{self.intro()}: rules: {changes} change{'' if changes == 1 else 's'}, "
                f"quiet {quiet:.1f}s of {format_timespan(settle)}")

    def due(self, last_change: float, config: Config) -> float | None:
        """When the current stage's window ends, if its conditions hold."""
        if not self.held():
            return None
        stage = self.stages[self.index]
        held = [self.held_since[(self.index, ci)] for ci in range(len(stage.conditions))]
        return max([last_change] + held) + config.stage_settle(stage)

    def deadline(self, gate_started: float, config: Config) -> float:
        limits = [math.inf]
        if config.timeout:
            limits.append(gate_started + config.timeout)
        if not self.done and self.stages[self.index].timeout:
            limits.append(self.started + self.stages[self.index].timeout)
        return min(limits)

    def advance(self, now: float) -> bool:
        """On to the next stage; False when that was the last."""
        self.index += 1
        self.started = now
        self.announced_held = False
        return not self.done

    def redo_last(self) -> None:
        """The rules moved under the compat run: settle the last stage again."""
        self.index = len(self.stages) - 1
        self.announced_held = False
