"""The gate as a pure state machine: ordered stages, their conditions, STATUS text.

Facts (unit states, links, nf_tables snapshots) and the clock are passed in;
decisions come out. A stage is done when its conditions hold and the watched
scope has been quiet for the stage's settle window since both the conditions
began to hold and the last relevant change, confirmed by a digest check. A
condition that stops holding sends the gate back to its stage. After the last
stage the compat probe runs; then READY.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .config import ChainExists, Condition, Config, LinkUp, Stage, TableExists, UnitActive
from .model import Snapshot
from .settle import QuietWindow
from .timespan import format_timespan


# --- facts and conditions -------------------------------------------------------

@dataclass(frozen=True)
class LinkState:
    up: bool          # administratively up and with carrier (IFF_UP and IFF_LOWER_UP)
    operstate: str = ""


@dataclass
class Facts:
    units: dict[str, str] = field(default_factory=dict)        # unit → ActiveState
    links: dict[str, LinkState] = field(default_factory=dict)  # present links only
    snapshot: Snapshot | None = None


def evaluate(cond: Condition, facts: Facts) -> tuple[bool, str]:
    """Whether the condition holds, and what we wait for when it does not."""
    if isinstance(cond, UnitActive):
        state = facts.units.get(cond.unit)
        return state == "active", (f"waiting for {cond.unit} to become active"
                                   + (f" (now {state})" if state else ""))
    if isinstance(cond, LinkUp):
        link = facts.links.get(cond.link)
        if link is None:
            return False, f"waiting for {cond.link} to appear"
        return link.up, f"waiting for {cond.link} to come up"
    snap = facts.snapshot
    table = snap.table(cond.table) if snap else None
    if isinstance(cond, TableExists):
        return table is not None, f"waiting for table {cond.table}"
    assert isinstance(cond, ChainExists)
    where = f"{cond.table} {cond.chain}"
    if table is None or table.chain(cond.chain) is None:
        return False, f"waiting for chain {where}"
    if cond.iifname or cond.oifname:
        matches = [r.interface_matches() for r in table.rules_of(cond.chain)]  # once per rule
        for key in ("iifname", "oifname"):
            wanted = getattr(cond, key)
            if wanted and not any(wanted in m[key] for m in matches):
                return False, f"waiting for a rule matching {key} {wanted} in {where}"
    return True, ""


# --- decisions -------------------------------------------------------------------

@dataclass(frozen=True)
class Wait:
    until: float  # math.inf: until something happens


@dataclass(frozen=True)
class NeedConfirm:
    """The window has run: check the scope is unchanged (genid, else digest)."""


@dataclass(frozen=True)
class RunCompat:
    """All stages settled: run the compat probe and report with compat_result()."""


@dataclass(frozen=True)
class Ready:
    degraded: str | None = None


@dataclass(frozen=True)
class Failed:
    exit_code: int
    reason: str


Decision = Wait | NeedConfirm | RunCompat | Ready | Failed


@dataclass(frozen=True)
class GateEvent:
    """Something worth a journal line: kind is one of DESIGN's FWGATE_EVENT values."""

    kind: str
    stage: str
    message: str
    at: float


class Gate:
    MAX_REPAIR_ROUNDS = 3

    def __init__(self, config: Config, now: float, stages: tuple[Stage, ...] | None = None,
                 label: str | None = None):
        self.config = config
        self.label = label  # names a round after READY ("watching") instead of "stage i/n"
        self.stages = config.stages if stages is None else stages
        self.started = now
        self.window = QuietWindow(now)
        self.index = 0
        self.stage_started = now
        self.held_since: dict[tuple[int, int], float] = {}
        self.waiting_for: dict[tuple[int, int], str] = {}
        self.announced_held = False
        self.outcome: Ready | Failed | None = None
        self.compat_pending = False
        self.repair_rounds = 0
        self.timed_out: str | None = None
        self.events: list[GateEvent] = []
        self._emit("stage-start", now, f"{label}: the watched tables changed; settling" if label
                   else self._stage_intro())

    # -- inputs ------------------------------------------------------------

    @property
    def stage(self) -> Stage | None:
        return self.stages[self.index] if self.index < len(self.stages) else None

    def observe(self, now: float, facts: Facts, rules_since: float | None = None) -> None:
        """Re-evaluate every condition. rules_since: when the snapshot's state began
        (the last change before it), so a rule condition holds from then, not from
        when we happened to dump."""
        back_to = None
        for si, stage in enumerate(self.stages):
            for ci, cond in enumerate(stage.conditions):
                key = (si, ci)
                holds, waiting = evaluate(cond, facts)
                if holds:
                    since = rules_since if isinstance(cond, (TableExists, ChainExists)) and \
                        rules_since is not None else now
                    self.held_since.setdefault(key, since)
                    self.waiting_for.pop(key, None)
                else:
                    if key in self.held_since and si < self.index and back_to is None:
                        back_to = (si, waiting)
                    self.held_since.pop(key, None)
                    self.waiting_for[key] = waiting
        if back_to is not None and self.outcome is None:
            si, waiting = back_to
            self.index, self.stage_started = si, now
            self.compat_pending, self.announced_held = False, False
            self._emit("stage-start", now, f"back to {self._stage_intro()}: a condition "
                                           f"stopped holding ({waiting})")

    def rules_changed(self, now: float) -> None:
        self.window.change(now)

    def events_lost(self, now: float) -> None:
        self.window.lost_events(now)

    def confirm(self, now: float, genid: int, digest: str | None) -> None:
        """Answer to NeedConfirm: digest None means the genid has not moved."""
        if digest is None:
            ok = self.window.unchanged_since_baseline(genid)
        else:
            ok = self.window.confirm(now, genid, digest)
        # The fresh facts behind a digest may have sent the gate back meanwhile.
        if ok and isinstance(self.decide(now), NeedConfirm):
            self._complete_stage(now)

    def compat_result(self, now: float, incompatible: list[str], repaired: int) -> None:
        """Answer to RunCompat: one line per rule iptables-nft cannot read, and how
        many rules were just repaired (those restart the window and are re-checked)."""
        policy = self.config.compat.on_incompatible
        self.compat_pending = False
        if repaired:
            self.repair_rounds += 1
            self._emit("repaired", now, f"repaired {repaired} rule(s); settling again")
            if self.repair_rounds <= self.MAX_REPAIR_ROUNDS:
                self.settle_again(now)
                return
        if not incompatible:
            self._finish(now, Ready(self.timed_out))
            return
        summary = f"{len(incompatible)} rule(s) iptables-nft cannot read: {incompatible[0]}"
        self._emit("incompatible", now, summary)
        if policy == "warn":
            self._finish(now, Ready("; ".join(filter(None, [self.timed_out, summary]))))
        else:  # fail, or repair that could not fix everything
            self._finish(now, Failed(3, summary))

    def settle_again(self, now: float) -> None:
        """Our own change (a repair), or one under it: the last stage settles anew."""
        self.compat_pending = False
        self.window.change(now, count=False)
        self.index = max(0, len(self.stages) - 1)
        self.announced_held = False

    # -- the decision ----------------------------------------------------------

    def decide(self, now: float) -> Decision:
        if self.outcome is not None:
            return self.outcome
        if self.compat_pending:
            return RunCompat()
        deadline = self.deadline()
        stage = self.stage
        if stage is None:
            return self._all_settled()
        if now >= deadline:
            return self._timeout(now)
        keys = [(self.index, ci) for ci in range(len(stage.conditions))]
        if any(k not in self.held_since for k in keys):
            return Wait(deadline)
        if not self.announced_held:
            self.announced_held = True
            if not self.label:
                self._emit("stage-held", now, f"{self._stage_intro()}: conditions hold, settling")
        due = max([self.window.last_change] + [self.held_since[k] for k in keys]) + \
            self.config.stage_settle(stage)
        if now < due or self.window.baseline is None:
            return Wait(min(due, deadline) if now < due else deadline)
        return NeedConfirm()

    def deadline(self) -> float:
        limits = [math.inf]
        if self.config.timeout:
            limits.append(self.started + self.config.timeout)
        stage = self.stage
        if stage is not None and stage.timeout:
            limits.append(self.stage_started + stage.timeout)
        return min(limits)

    # -- STATUS ----------------------------------------------------------------

    def status(self, now: float) -> str:
        if isinstance(self.outcome, Ready):
            return f"ready (degraded: {self.outcome.degraded})" if self.outcome.degraded else \
                f"ready: rules settled after {now - self.started:.1f}s"
        if isinstance(self.outcome, Failed):
            return f"failed: {self.outcome.reason}"
        if self.compat_pending or self.stage is None:
            return "compat: checking that iptables-nft can read the settled rules"
        stage = self.stage
        waiting = next((self.waiting_for[(self.index, ci)] for ci in range(len(stage.conditions))
                        if (self.index, ci) in self.waiting_for), None)
        head = self._stage_intro()
        if waiting:
            return f"{head}: {waiting}"
        settle = self.config.stage_settle(stage)
        quiet = min(self.window.quiet_for(now), settle)
        changes = self.window.changes
        return (f"{head}: rules: {changes} change{'' if changes == 1 else 's'}, quiet "
                f"{quiet:.1f}s of {format_timespan(settle)}")

    def take_events(self) -> list[GateEvent]:
        out, self.events = self.events, []
        return out

    # -- internals ---------------------------------------------------------------

    def _name(self) -> str:
        return self.stage.name if self.stage else "compat"

    def _stage_intro(self) -> str:
        if self.label:
            return self.label
        if self.stage is None:
            return "compat"
        return f"stage {self.index + 1}/{len(self.stages)} {self.stage.name}"

    def _emit(self, kind: str, now: float, message: str, stage: str | None = None) -> None:
        self.events.append(GateEvent(kind, stage or self._name(), message, now))

    def _complete_stage(self, now: float) -> None:
        stage = self.stage
        assert stage is not None
        self._emit("settled", now, f"{self._stage_intro()}: settled, quiet for "
                                   f"{format_timespan(self.config.stage_settle(stage))}")
        self.index += 1
        self.stage_started = now
        self.announced_held = False
        if self.stage is not None:
            self._emit("stage-start", now, self._stage_intro())

    def _all_settled(self) -> Decision:
        self.compat_pending = True
        return RunCompat()

    def _timeout(self, now: float) -> Decision:
        reason = f"timed out in {self.status(now)}"
        self._emit("timeout", now, reason)
        if self.config.on_timeout == "fail":
            self._finish(now, Failed(1, reason))
            return self.outcome  # type: ignore[return-value]
        # proceed: stop waiting, still run the compat probe, then READY degraded.
        self.timed_out = reason
        self.index = len(self.stages)
        return self._all_settled()

    def _finish(self, now: float, outcome: Ready | Failed) -> None:
        self.outcome = outcome
        if isinstance(outcome, Ready) and not self.label:
            self._emit("ready", now, self.status(now), stage="ready")
