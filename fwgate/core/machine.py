"""The gate's whole life as one pure state machine: a small coordinator over named parts.

    machine = Machine(config, now, Role.GATE, own_portids={sock.portid})
    actions = machine.start(now)
    actions = machine.handle(NftEvents(now, events))   # ... and so on

The phases and every way between them are one table (fwgate.core.phases). The parts,
each a small pure object with its own tests:

    StabilityProbe       stability.py  is the watched scope quiet, since when; its Scope
      QuietWindow        window.py     the last foreign change; the baseline after it
      DumpPacer          pacer.py      when to take the next snapshot
      GenerationConfirmer confirm.py   is the window really quiet: genid, else digest
      TransactionCounter transactions.py  a foreign transaction counts once, when read
    StageTracker         stages.py     which stage, since when each condition holds; its lines
    RepairQueue          repairs.py    judge each added rule, re-encode at once, one batch
    RestartAfterRepair   repairs.py    restart a crashed unit after a repair, not too often
    CompatRuns           compat_runs.py  one compat run at a time: verdict or sweep; retries
    Heartbeat, NetbirdQuestion  heartbeat.py  the state file's pulse; asking systemd
    RetryPolicy          retry.py      how often a refused transaction is tried again
    Record               record.py     what is said and kept: State, journal, log, sd_notify

What stays here is the coordination: which parts an input concerns, what the phase
makes of their answers (READY, exit 3, back to a stage, settle again), and the actions
that follow. The executor reads only the actions: RunCompat says whether it runs in the
background (after READY), Watching names the scope whose changes it stamps.

The compat reader and the mark model are named at the top (compat_policy, marks) and
loaded at first use (deferred.py): the gate's first snapshot does not wait on them.

The machine matches each input to the parts it concerns, then asks them (in `_step`)
what is due now; `next_wakeup` is the earliest of their `due()`. It does no I/O and
reads no clock: inputs carry `now`. docs/architecture.md draws the whole map.
"""
from __future__ import annotations

import enum
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
from .compat_runs import BUSY_WINDOWS, MAX_SETTLE_ROUNDS, CompatRuns, Run
from .confirm import Answer
from .deferred import deferred
from .heartbeat import HEARTBEAT, NETBIRD_RECHECK, Heartbeat, NetbirdQuestion
from .pacer import DEBOUNCE, PACE
from .phases import Phase, Trigger, after, first_phase
from .record import Record, checking_status, guarding_status, ready_status
from .repairs import RepairQueue, RestartAfterRepair
from .retry import MOVED_RULESET
from .stability import Scope, StabilityProbe
from .stages import StageTracker

if TYPE_CHECKING:
    from ..compat.policy import ProbeResult, Verdict

# The compat reader, named here, loaded at first use (fwgate.core.deferred): the gate's
# first snapshot must not wait on it.
compat_policy = deferred("fwgate.compat.policy")

# The parts' constants, where callers of the machine have always found them.
__all__ = ["Machine", "Phase", "Role", "BUSY_WINDOWS", "DEBOUNCE", "HEARTBEAT",
           "MAX_COMPAT_ROUNDS", "MAX_REPAIR_RETRIES", "NETBIRD_RECHECK", "PACE"]
MAX_COMPAT_ROUNDS = MAX_SETTLE_ROUNDS
MAX_REPAIR_RETRIES = MOVED_RULESET.retries

NETBIRD_TABLE = TableRef("ip", "netbird")  # made at every Netbird start


class Role(enum.Enum):
    GATE = "gate"     # `fwgate run`: stages, compat, READY (then exit, or guard)
    GUARD = "guard"   # `fwgate guard`: compat, READY at once, then guard for good


class Machine:
    def __init__(self, config: Config, now: float, role: Role = Role.GATE, *,
                 own_portids: frozenset[int] | set[int] = frozenset(),
                 keep_guarding: bool | None = None,
                 wall_offset: float = 0.0, pid: int = 0, netns: str | None = None,
                 facts: Facts | None = None, setup: Setup | None = None,
                 config_error: str | None = None, crash_streak: int = 0):
        self.role = role
        self.own_portids = frozenset(own_portids) - {0}  # what our own transactions' events carry
        self.keep_guarding = role is Role.GUARD or (
            config.after_ready.mode == "watch" if keep_guarding is None else keep_guarding)
        self.started = now
        self.record = Record(State(pid, netns, role=role.value, version=__version__,
                                   started_at=now + wall_offset, heartbeat_every=HEARTBEAT,
                                   config_error=config_error, crash_streak=crash_streak),
                             now, wall_offset, self._where)
        self.facts = facts or Facts()  # links and units as the watchers first saw them
        self.ready_sent = False
        self.restarts = RestartAfterRepair()
        self.heartbeat = Heartbeat(now)
        self.netbird = NetbirdQuestion()
        self.announce_start = False
        self.repairs = RepairQueue(setup=setup)
        self.runs = CompatRuns(now)
        self._configure(config, now, None)

    @property
    def state(self) -> State:
        """The State as last changed (published with the next SaveState)."""
        return self.record.state

    def _configure(self, config: Config, now: float, trigger: Trigger | None) -> None:
        """(Re)start with `config`: before READY the gate starts over; after it the
        watched tables settle and are checked again."""
        self.config = config
        self.record.set(config_source=config.source)
        stages = config.stages if self.role is Role.GATE else ()
        scope = Scope.of(config, bool(stages))
        if trigger is None:
            self.stability = StabilityProbe(scope, now)
        else:
            self.stability.restart(scope, now)
        self.runs.restart(now)  # a run in flight still answers
        self.timed_out: str | None = None
        if self.ready_sent:
            self.runs.unchecked(now)
        else:
            self.stages = StageTracker(stages, now)
        self.phase = first_phase(bool(stages)) if trigger is None else after(self.phase, trigger)

    def _go(self, trigger: Trigger) -> None:
        self.phase = after(self.phase, trigger)

    @property
    def watched(self) -> frozenset[TableRef]:
        return self.stability.scope.watched

    @property
    def repair_policy(self) -> str:
        return self.config.compat.on_incompatible

    # -- the one entry ----------------------------------------------------------------

    def start(self, now: float) -> list[A.Action]:
        """The first actions: announce the first stage (or the first check)."""
        self.record.out = [A.Watching(self.watched)]
        self._observe(now)
        if self.phase is Phase.GATING:
            # Journaled with the first snapshot's generation and digest, a dump away.
            self.announce_start = True
            # Rules already there had no event: repair them at once too.
            self.runs.want_sweep(self.repair_policy == "repair")
        self._step(now)
        self._publish(now, force=True)
        self._ask_last()
        return self.record.out

    def handle(self, inp: I.Input) -> list[A.Action]:
        self.record.out = []
        if self.phase is Phase.DONE:
            return self.record.out
        match inp:
            case I.NftEvents():
                self._on_events(inp.now, inp.events)
            case I.EventsLost():
                self._on_events_lost(inp.now)
            case I.Dumped():
                self._on_dumped(inp)
            case I.DumpFailed():  # the ruleset changed under every dump tried: a change too
                self.stability.dump_failed(inp.now)
                self.record.changed(inp.now)
                self._note_unchecked(inp.now)
            case I.Generation():
                self._on_generation(inp.now, inp.genid)
            case I.LinksChanged():
                self.facts = replace(self.facts, links=dict(inp.links))
                self._observe(inp.now)
            case I.UnitsChanged():
                self.facts = replace(self.facts, units=dict(inp.units))
                self._observe(inp.now)
            case I.CompatDone():
                self._on_compat_done(inp.now, inp.result)
            case I.CompatFailed():  # a binary vanished in an upgrade, say: again a window later
                self.runs.failed(inp.now, self.config.settle)
                self.record.compat_failed(inp.reason)
                self._note_unchecked(inp.now)
            case I.RepairDone():
                self._on_repair_done(inp)
            case I.UnitRestarted() if inp.error:
                self.record.log("warning", inp.error)
            case I.UnitRestarted() if inp.was:
                self.restarts.restarted(inp.now)
                self.record.restarted(inp.now, inp.unit, inp.was)
            case I.NetbirdRead():
                explain = self.netbird.answered(inp.now, recheck=self.keep_guarding)
                self.record.netbird_read(inp.now, inp.env, explain)
            case I.ConfigRejected():
                self.record.config_rejected(self.config.source, inp.reason)
            case I.Tick():
                pass  # _step looks at the clock
            case I.Stop():
                self._on_stop(inp)
            case I.Reload():
                self._on_reload(inp)
        if self.phase is not Phase.DONE:
            self._step(inp.now)
        self._publish(inp.now)
        self._ask_last()
        return self.record.out

    def _ask_last(self) -> None:
        """D-Bus round trips go last in their batch: nothing waits on them."""
        if self.phase is not Phase.DONE and self.netbird.take():
            self._emit(A.ReadNetbird())

    # -- questions --------------------------------------------------------------------

    def next_wakeup(self) -> float:
        """When to call handle(Tick) if nothing arrives first (math.inf: never)."""
        if self.phase is Phase.DONE:
            return math.inf
        times = [self.heartbeat.due(self.keep_guarding or self.before_ready), self.netbird.due()]
        if self.phase is not Phase.GUARDING:
            times.append(self.stability.dump_due())
        if self.phase is Phase.GATING:
            times.append(self.stages.deadline(self.started, self.config))
            end = self.stability.window_end(self.stages.due(self.stability.last_change,
                                                            self.config))
            times.append(math.inf if end is None else end)
        elif self.phase is Phase.GUARDING:
            times.append(self.runs.guard_due(self.stability.last_change, self.config.settle))
        elif self.phase is Phase.CHECKING:
            times.append(self.runs.check_due())
        return min(times)

    def status(self, now: float) -> str:
        if self.phase is Phase.GUARDING:
            settling = self.runs.unchecked_since is not None
            return guarding_status(self.role is Role.GUARD, self.record.last_verdict,
                                   self.state.repairs_total,
                                   self.stability.window.changes if settling else None)
        if self.phase is Phase.CHECKING:
            return checking_status(self.timed_out)
        if self.phase is Phase.DONE:
            return self.record.last_status
        return self.stages.status(now, self.stability.window, self.config)

    @property
    def before_ready(self) -> bool:
        return not self.ready_sent and self.phase is not Phase.DONE

    # -- what happens next --------------------------------------------------------------

    def _step(self, now: float) -> None:
        self.netbird.tick(now)
        batch = self.repairs.next_batch()
        if batch is not None:
            self._emit(A.RepairRules(*batch))
        if self.phase is not Phase.GUARDING and (dump := self.stability.start_dump(now)):
            self._emit(dump)
        if self.runs.start_sweep(repair_busy=self.repairs.in_flight):
            self._run_compat(repair=True)
        if self.phase is Phase.GATING:
            self._gate_step(now)
        if self.phase is Phase.CHECKING and now >= self.runs.check_due() or \
                self.phase is Phase.GUARDING and \
                now >= self.runs.guard_due(self.stability.last_change, self.config.settle):
            # Guarding: quiet for a window, or never quiet for three: the probe reads it
            # all afresh (no baseline dump: it would only hold up the next repair).
            self._run_verdict()

    def _gate_step(self, now: float) -> None:
        if now >= self.stages.deadline(self.started, self.config):
            self._timeout(now)
            return
        if self.announce_start:
            return  # nothing else to decide before the first snapshot is in
        while (why := self.stages.skip_reason(self.facts)) is not None:
            self._journal("stage-skipped", now, self.stages.skipped_line(why))
            if not self._next_stage(now):
                return
        if not self.stages.held():
            return
        if self.stages.first_hold():
            self._journal("stage-held", now, self.stages.held_line())
        if self.stability.ask_at_end(now, self.stages.due(self.stability.last_change,
                                                          self.config)):
            self._emit(A.QueryGeneration())

    def _window_quiet(self, now: float) -> None:
        if self.phase is Phase.GATING:
            if self.stages.held():
                self._complete_stage(now)
        elif self.phase is Phase.GUARDING and self.runs.unchecked_since is not None:
            self._run_verdict()

    def _run_verdict(self) -> None:
        if self.runs.start_verdict():
            self._run_compat(repair=self.repair_policy == "repair")

    def _run_compat(self, repair: bool) -> None:
        # Before READY the gate waits on the verdict; after it nothing does.
        self._emit(A.RunCompat(repair, background=self.ready_sent))

    def _complete_stage(self, now: float) -> None:
        self._journal("settled", now, self.stages.settled_line(self.config))
        self.record.stage_took(self.stages.current.name, now - self.stages.started)
        self._next_stage(now)

    def _next_stage(self, now: float) -> bool:
        """On to the next stage (journaled); False when the stages are done."""
        if self.stages.advance(now):
            self._journal("stage-start", now, self.stages.intro())
            return True
        self._go(Trigger.STAGES_DONE)
        return False

    def _timeout(self, now: float) -> None:
        fail = self.config.on_timeout == "fail"
        reason = self.record.timed_out(now, self.status(now), fail)
        if fail:
            self._exit(EXIT_FAILED, reason)
            return
        # proceed: stop waiting, still run the compat probe, then READY degraded.
        self.timed_out = reason
        self._go(Trigger.TIMED_OUT)

    # -- nf_tables events, dumps, generations ---------------------------------------------

    def _on_events(self, now: float, events: tuple[Event, ...]) -> None:
        for event in events:
            if event.table is None:           # NEWGEN closes a transaction
                self.record.genid = event.genid
                if self.stability.committed(event.genid):
                    self._foreign_change(now)
                self.repairs.committed(event.genid)
                continue
            self.repairs.forget(event)  # ours too: the worker's probe may have repaired it
            if event.kind == "NEWTABLE" and event.table == NETBIRD_TABLE:
                self.netbird.ask()  # Netbird (re)started: what does it run with now?
            if event.portid in self.own_portids:
                self.stability.own_event(event.table)
                continue
            self._judge_added(event)
            self.stability.foreign_event(now, event.table)
        if self.stability.read_ends():
            self._foreign_change(now)

    def _judge_added(self, event: Event) -> None:
        """Repair at once: queue each rule just added that needs it (and, after READY,
        say at once of one that cannot be repaired)."""
        if event.kind != "NEWRULE" or event.rule is None:
            return
        repair = self.repair_policy == "repair"
        if not repair and self.phase is not Phase.GUARDING:
            return  # before READY the verdict says it
        if unreadable := self.repairs.judge(event.rule, repair):
            self.record.unreadable_added(unreadable.rule.ref, unreadable.reason)

    def _on_events_lost(self, now: float) -> None:
        self.stability.events_lost(now)
        self.record.resynced()
        self._note_unchecked(now)
        # A rule to repair may have been among the lost: look at everything once.
        self.repairs.clear()
        self.runs.want_sweep(self.repair_policy == "repair")

    def _on_dumped(self, inp: I.Dumped) -> None:
        now, snap = inp.now, inp.snapshot
        answer = self.stability.dumped(now, snap.genid, inp.digest, inp.cost)
        self.facts = replace(self.facts, snapshot=snap)
        self.record.genid, self.record.digest = snap.genid, inp.digest
        if answer is Answer.QUIET:
            self._observe(now)
            self._window_quiet(now)
            return
        if answer is Answer.CHANGED:
            self._note_unchecked(now)
        if self.announce_start:
            self.announce_start = False
            self._journal("stage-start", now, self.stages.intro())
        self._observe(now)

    def _on_generation(self, now: float, genid: int) -> None:
        if self.stability.generation(now, genid) is Answer.QUIET:
            self._window_quiet(now)

    def _foreign_change(self, now: float) -> None:
        self.stability.changed(now)
        self.record.changed(now)
        self._note_unchecked(now)

    def _note_unchecked(self, now: float) -> None:
        if self.phase is Phase.GUARDING:
            self.runs.unchecked(now)

    def _observe(self, now: float) -> None:
        """Re-evaluate every condition on the facts; one of an earlier stage that
        stopped holding sends the gate back to that stage."""
        if self.phase is not Phase.GATING and not (self.phase is Phase.CHECKING and
                                                   self.stages.stages):
            return
        waiting = self.stages.observe(self.facts, now, self.stability.rules_since)
        if waiting is not None:
            self._go(Trigger.CONDITION_LOST)
            self._journal("stage-start", now, self.stages.back_line(waiting))

    # -- compat runs and repairs ------------------------------------------------------------

    def _on_compat_done(self, now: float, result: ProbeResult) -> None:
        run, again = self.runs.answered(result.conflict)
        if again:  # the ruleset moved under the repair: look again
            self._run_compat(repair=run is Run.SWEEP or self.repair_policy == "repair")
            return
        self.repairs.learned(result.profiles, result.setup)
        self._note_repairs(now, result.repaired)
        self.record.probe_seen(now, result)
        if result.netbird is not None and result.netbird.native:
            self.netbird.explain()
        if result.conflict:
            self.record.settling_again()
            self._settle_again(now)
            return
        if run is Run.SWEEP:
            return
        verdict = compat_policy.judge(result, self.repair_policy)
        self.record.verdict(now, verdict, result, self.phase is Phase.GUARDING, self.repair_policy)
        if self.phase is Phase.CHECKING:
            self._after_check(now, verdict)

    def _settle_again(self, now: float) -> None:
        """The ruleset moved under every repair attempt: let it settle, then judge."""
        more = self.runs.settle_again()
        self.stability.settle_again(now)
        if self.phase is Phase.GUARDING:
            self._note_unchecked(now)
        elif self.phase is Phase.CHECKING and self.stages.stages and more:
            self._go(Trigger.RULES_MOVED)
            self.stages.redo_last()
        elif self.phase is Phase.CHECKING:
            self.runs.wait(now, self.config.settle)

    def _after_check(self, now: float, verdict: Verdict) -> None:
        """The verdict before READY: READY, or exit 3 (the gate only; a guard is READY
        whatever it found: it gates nothing)."""
        if verdict.exit_code and self.role is Role.GATE:
            self.record.incompatible(verdict.summary)
            self._exit(EXIT_INCOMPATIBLE, verdict.summary)
            return
        status = ready_status(self.role is Role.GUARD, verdict, self.timed_out, now - self.started)
        self.ready_sent = True
        self.record.ready(now, status)
        if not self.keep_guarding:
            self.record.set(phase="ready")
            self._exit(EXIT_OK, status)
            return
        self._go(Trigger.READY_GUARDING)
        self.record.guarding(self.watched)

    def _on_repair_done(self, inp: I.RepairDone) -> None:
        # Refused: another transaction came first (the executor fed us its events
        # already); the queue tries again on the newest generation, or gives up.
        if self.repairs.done(inp.repairs, inp.produced_genid, self.stability.last_seen_genid):
            self.runs.want_sweep()  # still moving: look at everything once it is our turn
        if inp.produced_genid is not None:
            self._note_repairs(inp.now, inp.repairs)

    def _note_repairs(self, now: float, repairs) -> None:
        if not repairs:
            return
        if self.record.repaired(now, repairs):
            self.netbird.explain()  # Netbird wrote its native rule: say why, once
        if self.ready_sent and (unit := self.restarts.due(now, self.config.after_ready)):
            self._emit(A.RestartUnit(unit))

    # -- systemd, Netbird, signals ----------------------------------------------------------

    def _on_stop(self, inp: I.Stop) -> None:
        before = not self.ready_sent
        self.record.stopping(inp.signal, before)
        code = 130 if before and inp.signal == "SIGINT" else EXIT_OK
        self._exit(code, f"stopped by {inp.signal}", Trigger.STOPPED)

    def _on_reload(self, inp: I.Reload) -> None:
        self.record.reloaded(inp.config.source, self.ready_sent)
        self.netbird.ask()
        if self.ready_sent:
            trigger = Trigger.RELOADED_GUARDING
        else:
            has_stages = bool(inp.config.stages) and self.role is Role.GATE
            trigger = Trigger.RELOADED_STAGES if has_stages else Trigger.RELOADED_NO_STAGES
        self.repairs.clear()
        self._configure(inp.config, inp.now, trigger)
        self._emit(A.Watching(self.watched))
        if self.phase is Phase.GATING:
            self._journal("stage-start", inp.now, self.stages.intro())

    # -- output -----------------------------------------------------------------------------

    def _where(self) -> tuple[str, object]:
        """What a journal entry is stamped with: the stage's name, the window's baseline."""
        if self.phase is Phase.GATING and not self.stages.done:
            name = self.stages.current.name
        else:
            name = self.phase.value if self.phase is not Phase.CHECKING else "compat"
        return name, self.stability.baseline

    def _emit(self, action: A.Action) -> None:
        self.record.out.append(action)

    def _journal(self, kind: str, now: float, message: str, stage: str | None = None) -> None:
        self.record.journal(kind, now, message, stage)

    def _exit(self, code: int, status: str, trigger: Trigger = Trigger.EXIT) -> None:
        self._go(trigger)
        self.record.last_status = status
        self._emit(A.Exit(code, status))

    def _publish(self, now: float, force: bool = False) -> None:
        """STATUS when it changed; the state file with every transition, and at least
        every HEARTBEAT seconds (status calls a state older than a few of them stale)."""
        done = self.phase is Phase.DONE
        status = self.record.last_status if done else self.status(now)
        stage = self.stages.current if self.phase is Phase.GATING else None
        if self.record.publish(now, status, stage.name if stage else None, done,
                               force or self.heartbeat.is_due(now)):
            self.heartbeat.beat(now)
