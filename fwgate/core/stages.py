"""Which stage the gate is at, and since when each condition has held. Pure.

Each condition of each stage is evaluated on the facts after every change to them; a
stage is done when all its conditions hold and the quiet window has run (the machine
asks the window). A condition of an earlier stage that stops holding sends the gate
back to that stage. A rule condition holds since the state the snapshot shows began,
not since we looked. Every move is said in a `Line` for the journal, made here."""
from __future__ import annotations

import math
from typing import NamedTuple

from ..config import Config, Stage
from ..model import Facts
from ..timespan import format_timespan
from .conditions import evaluate, reads_rules, skipped
from .window import QuietWindow


class Line(NamedTuple):
    """A journal line about a stage: stage-start, stage-skipped, stage-held, settled."""
    kind: str
    stage: str
    text: str
    took: float | None = None   # settled: how long the stage took


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

    @property
    def name(self) -> str | None:
        return None if self.done else self.stages[self.index].name

    def intro(self) -> str:
        if self.done:
            return "compat"
        return f"stage {self.index + 1}/{len(self.stages)} {self.stages[self.index].name}"

    def observe(self, facts: Facts, now: float, rules_since: float) -> Line | None:
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
        return self._line("stage-start",
                          f"back to {self.intro()}: a condition stopped holding ({back_to[1]})")

    def walk(self, facts: Facts, now: float) -> list[Line]:
        """Skip the stages that do not apply to these facts (each next one started), then
        say once per visit that the current one's conditions hold. `done` after it: the
        last stage was skipped."""
        lines = []
        while not self.done and (why := skipped(self.stages[self.index], facts)) is not None:
            lines.append(self._line("stage-skipped", f"{self.intro()}: skipped: {why}"))
            lines += self._advance(now)
        if self.held() and not self.announced_held:
            self.announced_held = True
            lines.append(self._line("stage-held", f"{self.intro()}: conditions hold, settling"))
        return lines

    def complete(self, now: float, config: Config) -> list[Line]:
        """The current stage settled: said, with how long it took; the next one started."""
        settle = format_timespan(config.stage_settle(self.current))
        settled = self._line("settled", f"{self.intro()}: settled, quiet for {settle}")
        return [settled._replace(took=now - self.started), *self._advance(now)]

    def start_line(self) -> Line:
        return self._line("stage-start", self.intro())

    def _advance(self, now: float) -> list[Line]:
        """On to the next stage, said unless that was the last."""
        self.index += 1
        self.started = now
        self.announced_held = False
        return [] if self.done else [self.start_line()]

    def _line(self, kind: str, text: str) -> Line:
        return Line(kind, self.stages[self.index].name, text)  # never past the last stage

    def held(self) -> bool:
        """Every condition of the current stage holds."""
        stage = self.current
        return stage is not None and all((self.index, ci) in self.held_since
                                         for ci in range(len(stage.conditions)))

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

    def redo_last(self) -> None:
        """The rules moved under the compat run: settle the last stage again."""
        self.index = len(self.stages) - 1
        self.announced_held = False
