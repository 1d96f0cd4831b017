"""The gate's whole life as one pure state machine: a small coordinator over named parts.

    machine = Machine(config, now, Role.GATE, own_portids={sock.portid})
    actions = machine.start(now)
    actions = machine.handle(NftEvents(now, events))   # ... and so on

The phases and every move between them are one table (phases.py). The parts, each a
small pure object with its own tests: StabilityProbe (stability.py, over the quiet
window, the dump pacer, the generation confirmer and the transaction counter),
StageTracker (stages.py), RepairQueue and RestartAfterRepair (repairs.py), CompatRuns
(compat_runs.py), Readiness (readiness.py), Heartbeat and NetbirdQuestion
(heartbeat.py), and Record (record.py: everything said and kept). docs/architecture.md
draws the map.

What stays here is the coordination: which parts an input concerns, what the phase
makes of their answers (READY, exit 3, back to a stage, settle again), and the actions
that follow. No I/O and no clock: inputs carry `now`; `next_wakeup` is the earliest
`due()` of the parts the phase listens to. The executor reads only the actions."""
from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

from .. import __version__
from ..compat.impact import Setup
from ..config import Config
from ..errors import EXIT_FAILED, EXIT_INCOMPATIBLE, EXIT_OK
from ..model import Facts, TableRef
from ..netlink.nftables import Event
from ..state import State
from . import actions as A
from . import inputs as I
from .compat_runs import CompatRuns, Run
from .confirm import Answer
from .deferred import deferred
from .heartbeat import HEARTBEAT, Heartbeat, NetbirdQuestion
from .phases import Phase, Trigger, after, first_phase
from .readiness import Readiness, Role, Then
from .record import Record, guarding_status
from .repairs import RepairQueue, RestartAfterRepair
from .stability import Scope, StabilityProbe
from .stages import Line, StageTracker

if TYPE_CHECKING:
    from ..compat.policy import ProbeResult, Verdict
    from ..compat.repair import Repair

# The compat reader, named here, loaded at first use (fwgate.core.deferred): the gate's
# first snapshot must not wait on it.
compat_policy = deferred("fwgate.compat.policy")

__all__ = ["Machine", "Phase", "Role"]

NETBIRD_TABLE = TableRef("ip", "netbird")  # made at every Netbird start


class Machine:
    def __init__(self, config: Config, now: float, role: Role = Role.GATE, *,
                 own_portids: frozenset[int] | set[int] = frozenset(),
                 keep_guarding: bool | None = None,
                 wall_offset: float = 0.0, pid: int = 0, netns: str | None = None,
                 facts: Facts | None = None, setup: Setup | None = None,
                 config_error: str | None = None, crash_streak: int = 0):
        self.own_portids = frozenset(own_portids) - {0}  # what our own transactions' events carry
        watch = config.after_ready.mode == "watch" if keep_guarding is None else keep_guarding
        self.readiness = Readiness(role, watch, now)
        self.record = Record(State(pid, netns, role=role.value, version=__version__,
                                   started_at=now + wall_offset, heartbeat_every=HEARTBEAT,
                                   config_error=config_error, crash_streak=crash_streak),
                             now, wall_offset, self._where)
        self.facts = facts or Facts()  # links and units as the watchers first saw them
        self.heartbeat, self.netbird = Heartbeat(now), NetbirdQuestion()
        self.repairs, self.restarts = RepairQueue(setup=setup), RestartAfterRepair()
        self.runs = CompatRuns(now)
        self.announce_start = False      # the first stage is journaled with the first snapshot
        self._configure(config, now, None)

    @property
    def state(self) -> State:
        """The State as last changed (published with the next SaveState)."""
        return self.record.state

    def _configure(self, config: Config, now: float, trigger: Trigger | None) -> None:
        """(Re)start with `config`: before READY the gate starts over; after it the
        watched tables settle and are checked again."""
        self.config = config
        self.repairing = config.compat.on_incompatible == "repair"
        self.record.set(config_source=config.source)
        stages = config.stages if self.readiness.gates else ()
        scope = Scope.of(config, bool(stages))
        if trigger is None:
            self.stability = StabilityProbe(scope, now)
        else:
            self.stability.restart(scope, now)
        self.runs.restart(now)  # a run in flight still answers
        self.readiness.restart()
        if self.readiness.sent:
            self.runs.unchecked(now)
        else:
            self.stages = StageTracker(stages, now)
        self.phase = first_phase(bool(stages)) if trigger is None else after(self.phase, trigger)

    # -- the one entry ----------------------------------------------------------------

    def start(self, now: float) -> list[A.Action]:
        """The first actions: announce the first stage (or the first check)."""
        self.record.out = [A.Watching(self.stability.scope.watched)]
        self._observe(now)
        if self.phase is Phase.GATING:
            self.announce_start = True
            self.runs.want_sweep(self.repairing)  # rules already there had no event
        return self._finish(now, force=True)

    def handle(self, inp: I.Input) -> list[A.Action]:
        """One input in; the actions it leads to, in the order they are to be carried out."""
        self.record.out = []
        if self.phase is Phase.DONE:
            return self.record.out
        now = inp.now
        match inp:
            case I.NftEvents():
                self._on_events(now, inp.events)
            case I.EventsLost():
                self.stability.events_lost(now)
                self.record.resynced()
                self._note_unchecked(now)
                self.repairs.clear()  # a rule to repair may have been among the lost
                self.runs.want_sweep(self.repairing)
            case I.Dumped():
                self._on_dumped(now, inp)
            case I.DumpFailed():  # the ruleset changed under every dump tried: a change too
                self.stability.dump_failed(now)
                self._changed(now)
            case I.Generation():
                if self.stability.generation(now, inp.genid) is Answer.QUIET:
                    self._window_quiet(now)
            case I.LinksChanged():
                self.facts = replace(self.facts, links=dict(inp.links))
                self._observe(now)
            case I.UnitsChanged():
                self.facts = replace(self.facts, units=dict(inp.units))
                self._observe(now)
            case I.CompatDone():
                self._on_compat_done(now, inp.result)
            case I.CompatFailed():  # a binary vanished in an upgrade, say: again a window later
                self.runs.failed(now, self.config.settle)
                self.record.compat_failed(inp.reason)
                self._note_unchecked(now)
            case I.RepairDone():
                # Refused: another transaction came first; the queue tries again on the
                # newest generation, or gives up and asks for a sweep.
                if self.repairs.done(inp.repairs, inp.produced_genid,
                                     self.stability.last_seen_genid):
                    self.runs.want_sweep()
                if inp.produced_genid is not None:
                    self._note_repairs(now, inp.repairs)
            case I.UnitRestarted() if inp.error:
                self.record.log("warning", inp.error)
            case I.UnitRestarted() if inp.was:
                self.restarts.restarted(now)
                self.record.restarted(now, inp.unit, inp.was)
            case I.NetbirdRead():
                explain = self.netbird.answered(now, recheck=self.readiness.keep_guarding)
                self.record.netbird_read(now, inp.env, explain)
            case I.ConfigRejected():
                self.record.config_rejected(self.config.source, inp.reason)
            case I.Stop():
                self.record.stopping(inp.signal, not self.readiness.sent)
                self._exit(self.readiness.stop_code(inp.signal), f"stopped by {inp.signal}",
                           Trigger.STOPPED)
            case I.Reload():
                self._on_reload(inp)
        return self._finish(now)

    def _finish(self, now: float, force: bool = False) -> list[A.Action]:
        """What is due now, the State published, D-Bus round trips last (nothing waits on them)."""
        if self.phase is not Phase.DONE:
            self._step(now)
        self._publish(now, force)
        if self.phase is not Phase.DONE and self.netbird.take():
            self.record.out.append(A.ReadNetbird())
        return self.record.out

    # -- questions --------------------------------------------------------------------

    def next_wakeup(self) -> float:
        """When to call handle(Tick) if nothing arrives first (math.inf: never)."""
        if self.phase is Phase.DONE:
            return math.inf
        alive = self.readiness.keep_guarding or not self.readiness.sent
        times = [self.heartbeat.due(alive), self.netbird.due()]
        match self.phase:
            case Phase.GATING:
                end = self.stability.window_end(self._stage_due())
                times += [self.stability.dump_due(), self._deadline(),
                          math.inf if end is None else end]
            case Phase.CHECKING:
                times += [self.stability.dump_due(), self.runs.check_due()]
            case Phase.GUARDING:
                times.append(self._guard_due())
        return min(times)

    def status(self, now: float) -> str:
        match self.phase:
            case Phase.GUARDING:
                return guarding_status(not self.readiness.gates, self.record.last_verdict,
                                       self.state.repairs_total,
                                       self.stability.changes if self.runs.settling else None)
            case Phase.CHECKING:
                return self.readiness.checking_status()
            case Phase.DONE:
                return self.record.last_status
        return self.stages.status(now, self.stability.window, self.config)

    def _stage_due(self) -> float | None:
        return self.stages.due(self.stability.last_change, self.config)

    def _guard_due(self) -> float:
        return self.runs.guard_due(self.stability.last_change, self.config.settle)

    def _deadline(self) -> float:
        return self.stages.deadline(self.readiness.started, self.config)

    # -- what happens next --------------------------------------------------------------

    def _step(self, now: float) -> None:
        self.netbird.tick(now)
        if (batch := self.repairs.next_batch()) is not None:
            self.record.out.append(A.RepairRules(*batch))
        if self.phase is not Phase.GUARDING and (dump := self.stability.start_dump(now)):
            self.record.out.append(dump)
        if self.runs.start_sweep(repair_busy=self.repairs.in_flight):
            self._run_compat(repair=True)
        if self.phase is Phase.GATING:
            self._gate_step(now)
        # Guarding: quiet for a window, or never quiet for three: the probe reads it all
        # afresh (no baseline dump: it would only hold up the next repair).
        if self.phase is Phase.CHECKING and now >= self.runs.check_due() or \
                self.phase is Phase.GUARDING and now >= self._guard_due():
            self._run_verdict()

    def _gate_step(self, now: float) -> None:
        if now >= self._deadline():
            self._timeout(now)
        elif not self.announce_start:  # nothing to decide before the first snapshot is in
            self._say_stages(now, self.stages.walk(self.facts, now))
            if self.phase is Phase.GATING and \
                    self.stability.ask_at_end(now, self._stage_due()):
                self.record.out.append(A.QueryGeneration())

    def _say_stages(self, now: float, lines: list[Line]) -> None:
        """Journal the stage tracker's moves; after the last stage, on to the check."""
        self.record.stages_moved(now, lines)
        if self.stages.done:
            self.phase = after(self.phase, Trigger.STAGES_DONE)

    def _timeout(self, now: float) -> None:
        fail = self.config.on_timeout == "fail"
        reason = self.record.timed_out(now, self.status(now), fail)
        if fail:
            self._exit(EXIT_FAILED, reason)
        else:  # proceed: stop waiting, still run the compat probe, then READY degraded
            self.readiness.timed_out = reason
            self.phase = after(self.phase, Trigger.TIMED_OUT)

    def _window_quiet(self, now: float) -> None:
        if self.phase is Phase.GATING and self.stages.held():
            self._say_stages(now, self.stages.complete(now, self.config))
        elif self.phase is Phase.GUARDING and self.runs.settling:
            self._run_verdict()

    def _run_verdict(self) -> None:
        if self.runs.start_verdict():
            self._run_compat(repair=self.repairing)

    def _run_compat(self, repair: bool) -> None:
        # Before READY the gate waits on the verdict; after it nothing does.
        self.record.out.append(A.RunCompat(repair, background=self.readiness.sent))

    # -- nf_tables events, dumps, conditions ----------------------------------------------

    def _on_events(self, now: float, events: tuple[Event, ...]) -> None:
        for event in events:
            if event.table is None:
                self.record.genid = event.genid
            elif event.kind == "NEWTABLE" and event.table == NETBIRD_TABLE:
                self.netbird.ask()  # Netbird (re)started: what does it run with now?
        # Repair at once: rules just added are queued; after READY one that cannot be
        # repaired is said at once (before READY the verdict says it).
        judge = self.repairing or self.phase is Phase.GUARDING
        for found in self.repairs.read(events, self.own_portids, judge, self.repairing):
            self.record.unreadable_added(found.rule.ref, found.reason)
        if changes := self.stability.read(now, events, self.own_portids):
            self._changed(now, changes)

    def _on_dumped(self, now: float, inp: I.Dumped) -> None:
        answer = self.stability.dumped(now, inp.snapshot.genid, inp.digest, inp.cost)
        self.facts = replace(self.facts, snapshot=inp.snapshot)
        self.record.genid, self.record.digest = inp.snapshot.genid, inp.digest
        if answer is Answer.CHANGED:
            self._note_unchecked(now)
        if self.announce_start and answer is not Answer.QUIET:
            self.announce_start = False  # journaled with this generation and digest
            self._say_stages(now, [self.stages.start_line()])
        self._observe(now)
        if answer is Answer.QUIET:
            self._window_quiet(now)

    def _changed(self, now: float, count: int = 1) -> None:
        """Foreign changes to the watched scope (the probe's window restarted already)."""
        self.record.changed(now, count)
        self._note_unchecked(now)

    def _note_unchecked(self, now: float) -> None:
        if self.phase is Phase.GUARDING:
            self.runs.unchecked(now)

    def _observe(self, now: float) -> None:
        """Re-evaluate every condition on the facts; one of an earlier stage that
        stopped holding sends the gate back to that stage."""
        if self.phase is Phase.GATING or self.phase is Phase.CHECKING and self.stages.stages:
            back = self.stages.observe(self.facts, now, self.stability.rules_since)
            if back is not None:
                self.phase = after(self.phase, Trigger.CONDITION_LOST)
                self._say_stages(now, [back])

    # -- compat runs and repairs ------------------------------------------------------------

    def _on_compat_done(self, now: float, result: ProbeResult) -> None:
        run, again = self.runs.answered(result.conflict)
        if again:  # the ruleset moved under the repair: look again
            self._run_compat(repair=run is Run.SWEEP or self.repairing)
            return
        self.repairs.learned(result.profiles, result.setup)
        self._note_repairs(now, result.repaired)
        self.record.probe_seen(now, result)
        if result.netbird is not None and result.netbird.native:
            self.netbird.explain()
        if result.conflict:
            self.record.settling_again()
            self._settle_again(now)
        elif run is not Run.SWEEP:
            policy = self.config.compat.on_incompatible
            verdict = compat_policy.judge(result, policy)
            self.record.verdict(now, verdict, result, self.phase is Phase.GUARDING, policy)
            if self.phase is Phase.CHECKING:
                self._after_check(now, verdict)

    def _settle_again(self, now: float) -> None:
        """The ruleset moved under every repair attempt: let it settle, then judge."""
        more = self.runs.settle_again()
        self.stability.settle_again(now)
        if self.phase is Phase.GUARDING:
            self._note_unchecked(now)
        elif self.phase is Phase.CHECKING and self.stages.stages and more:
            self.phase = after(self.phase, Trigger.RULES_MOVED)
            self.stages.redo_last()
        elif self.phase is Phase.CHECKING:
            self.runs.wait(now, self.config.settle)

    def _after_check(self, now: float, verdict: Verdict) -> None:
        then, status = self.readiness.after_verdict(verdict, now)
        if then is Then.INCOMPATIBLE:
            self.record.incompatible(status)
            self._exit(EXIT_INCOMPATIBLE, status)
            return
        self.record.ready(now, status)
        if then is Then.EXIT:
            self.record.set(phase="ready")
            self._exit(EXIT_OK, status)
        else:
            self.phase = after(self.phase, Trigger.READY_GUARDING)
            self.record.guarding(self.stability.scope.watched)

    def _note_repairs(self, now: float, repairs: tuple[Repair, ...]) -> None:
        if not repairs:
            return
        if self.record.repaired(now, repairs):
            self.netbird.explain()  # Netbird wrote its native rule: say why, once
        if self.readiness.sent and (unit := self.restarts.due(now, self.config.after_ready)):
            self.record.out.append(A.RestartUnit(unit))

    # -- signals ----------------------------------------------------------------------------

    def _on_reload(self, inp: I.Reload) -> None:
        self.record.reloaded(inp.config.source, self.readiness.sent)
        self.netbird.ask()
        if self.readiness.sent:
            trigger = Trigger.RELOADED_GUARDING
        elif inp.config.stages and self.readiness.gates:
            trigger = Trigger.RELOADED_STAGES
        else:
            trigger = Trigger.RELOADED_NO_STAGES
        self.repairs.clear()
        self._configure(inp.config, inp.now, trigger)
        self.record.out.append(A.Watching(self.stability.scope.watched))
        if self.phase is Phase.GATING:
            self._say_stages(inp.now, [self.stages.start_line()])

    # -- output -----------------------------------------------------------------------------

    def _where(self) -> tuple[str, object]:
        """What a journal entry is stamped with: the stage's name, the window's baseline."""
        if self.phase is Phase.GATING and not self.stages.done:
            name = self.stages.name
        else:
            name = self.phase.value if self.phase is not Phase.CHECKING else "compat"
        return name, self.stability.baseline

    def _exit(self, code: int, status: str, trigger: Trigger = Trigger.EXIT) -> None:
        self.phase = after(self.phase, trigger)
        self.record.last_status = status
        self.record.out.append(A.Exit(code, status))

    def _publish(self, now: float, force: bool = False) -> None:
        """STATUS when it changed; the state file with every transition, and at least
        every HEARTBEAT seconds (status calls a state older than a few of them stale)."""
        done = self.phase is Phase.DONE
        status = self.record.last_status if done else self.status(now)
        stage = self.stages.name if self.phase is Phase.GATING else None
        if self.record.publish(now, status, stage, done, force or self.heartbeat.is_due(now)):
            self.heartbeat.beat(now)
