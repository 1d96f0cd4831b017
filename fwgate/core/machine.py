"""The gate's whole life as one pure state machine: a small coordinator over named parts.

    machine = Machine(config, now, Role.GATE, own_portids={sock.portid})
    actions = machine.start(now)
    actions = machine.handle(NftEvents(now, events))   # ... and so on

The phases and every way between them are one table (fwgate.core.phases). The parts,
each a small pure object with its own tests:

    QuietWindow          window.py    when the watched scope last changed; its baseline
    DumpPacer            pacer.py     when to take the next snapshot
    GenerationConfirmer  confirm.py   is the window really quiet: genid, else digest
    StageTracker         stages.py    which stage, since when each condition holds
    RepairQueue          repairs.py   rules to re-encode at once, one batch in flight
    CompatRuns           compat_runs.py  one compat run at a time: verdict or sweep
    Heartbeat, NetbirdQuestion  heartbeat.py  the state file's pulse; asking systemd
    RetryPolicy          retry.py     how often a refused transaction is tried again

The machine matches each input to the parts it concerns, then asks them (in `_step`)
what is due now; `next_wakeup` is the earliest of their `due()`. It does no I/O and
reads no clock: inputs carry `now`. docs/architecture.md draws the whole map.
"""
from __future__ import annotations

import enum
import errno
import math
from dataclasses import replace

from .. import __version__
from ..compat.impact import Setup
from ..compat.policy import ProbeResult, Verdict, judge, judge_added_rule, repair_line
from ..compat.profiles import PROFILES
from ..compat.repair import Repair
from ..config import ChainExists, Config
from ..errors import EXIT_FAILED, EXIT_INCOMPATIBLE, EXIT_OK
from ..marks import conflict_text, harms
from ..model import Facts, TableRef
from ..netbird import explain_fallback, is_native_netbird_rule, prevention
from ..netlink.nftables import Event
from ..state import State
from ..timespan import format_timespan
from . import actions as A
from . import inputs as I
from .compat_runs import BUSY_WINDOWS, MAX_SETTLE_ROUNDS, CompatRuns, Run
from .confirm import Answer, GenerationConfirmer
from .heartbeat import HEARTBEAT, NETBIRD_RECHECK, Heartbeat, NetbirdQuestion
from .pacer import DEBOUNCE, PACE, DumpPacer
from .phases import Phase, Trigger, after, first_phase
from .repairs import RepairQueue
from .retry import MOVED_RULESET
from .stages import StageTracker
from .window import QuietWindow

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
        self.wall_offset = wall_offset    # time.time() - time.monotonic(), for the state file
        self.keep_guarding = role is Role.GUARD or (
            config.after_ready.mode == "watch" if keep_guarding is None else keep_guarding)
        self.started = now
        self.state = State(pid, netns, role=role.value, version=__version__,
                           started_at=self._wall(now), heartbeat_every=HEARTBEAT,
                           config_error=config_error, crash_streak=crash_streak)
        # Counted on every transaction: folded into the State when it is published.
        self.genid: int | None = None
        self.digest: str | None = None
        self.changes_total = self.resyncs_total = 0
        self.last_change_at: float | None = None
        self.facts = facts or Facts()  # links and units as the watchers first saw them
        self.setup = setup             # which k3s components run: what breaks matters
        self.compat_profiles = None    # the readers to judge a new rule for: every version
                                       # until a probe has said which binaries k3s runs
        self.ready_sent = False
        self.last_status = ""
        self.last_verdict: Verdict | None = None
        self.last_restart = -math.inf
        self.heartbeat = Heartbeat(now)
        self.netbird = NetbirdQuestion()
        self.announce_start = False
        self.seen_conflicts: set[tuple] = set()
        self.last_seen_genid: int | None = None
        self.repairs = RepairQueue()
        self.runs = CompatRuns(now)
        self.txn_touched = self.txn_counted = False
        self._out: list[A.Action] = []
        self._configure(config, now, None)

    def _configure(self, config: Config, now: float, trigger: Trigger | None) -> None:
        """(Re)start with `config`: before READY the gate starts over; after it the
        watched tables settle and are checked again."""
        self.config = config
        self.state = replace(self.state, config_source=config.source)
        stages = config.stages if self.role is Role.GATE else ()
        self.watched = frozenset(config.watch)
        self.interest = config.tables_of_interest() if stages else tuple(config.watch)
        self.keep_rules = tuple((c.table, c.chain) for s in stages for c in s.conditions
                                if isinstance(c, ChainExists))
        self.window = QuietWindow(now)
        self.pacer = DumpPacer(now)
        self.confirm = GenerationConfirmer()
        self.runs.restart(now)  # a run in flight still answers
        self.txn_touched = self.txn_counted = False
        self.timed_out: str | None = None
        if self.ready_sent:
            self.runs.unchecked(now)
        else:
            self.stages = StageTracker(stages, now)
        self.phase = first_phase(bool(stages)) if trigger is None else after(self.phase, trigger)

    def _go(self, trigger: Trigger) -> None:
        self.phase = after(self.phase, trigger)

    @property
    def repair_policy(self) -> str:
        return self.config.compat.on_incompatible

    # -- the one entry ----------------------------------------------------------------

    def start(self, now: float) -> list[A.Action]:
        """The first actions: announce the first stage (or the first check)."""
        self._out = []
        self._observe(now)
        if self.phase is Phase.GATING:
            # Journaled with the first snapshot's generation and digest, a dump away.
            self.announce_start = True
            # Rules already there had no event: repair them at once too.
            self.runs.want_sweep(self.repair_policy == "repair")
        self._step(now)
        self._publish(now, force=True)
        self._ask_last()
        return self._out

    def handle(self, inp: I.Input) -> list[A.Action]:
        self._out = []
        if self.phase is Phase.DONE:
            return self._out
        match inp:
            case I.NftEvents():
                self._on_events(inp.now, inp.events)
            case I.EventsLost():
                self._on_events_lost(inp.now)
            case I.Dumped():
                self._on_dumped(inp)
            case I.DumpFailed():  # the ruleset changed under every dump tried: a change too
                self.pacer.failed()
                self._foreign_change(inp.now)
                self.pacer.changed(inp.now)
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
                self._log("warning", f"compat: the check failed: {inp.reason}; trying again")
                self._note_unchecked(inp.now)
            case I.RepairDone():
                self._on_repair_done(inp)
            case I.UnitRestarted():
                self._on_unit_restarted(inp)
            case I.NetbirdRead():
                self._on_netbird_read(inp)
            case I.ConfigRejected():
                self.state = replace(self.state, config_error=inp.reason)
                self._log("error", f"SIGHUP: keeping the running config ({self.config.source}): "
                                   f"{inp.reason}")
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
        return self._out

    def _ask_last(self) -> None:
        """D-Bus round trips go last in their batch: nothing waits on them."""
        if self.phase is not Phase.DONE and self.netbird.take():
            self._out.append(A.ReadNetbird())

    # -- questions --------------------------------------------------------------------

    def next_wakeup(self) -> float:
        """When to call handle(Tick) if nothing arrives first (math.inf: never)."""
        if self.phase is Phase.DONE:
            return math.inf
        times = [self.heartbeat.due(self.keep_guarding or self.before_ready), self.netbird.due()]
        if self.phase is not Phase.GUARDING:
            times.append(self.pacer.due())
        if self.phase is Phase.GATING:
            times.append(self.stages.deadline(self.started, self.config))
            due = self.stages.due(self.window.last_change, self.config)
            # A window's end matters once its baseline is in: a pending dump comes first.
            if due is not None and not self.pacer.stale and not self.confirm.busy:
                times.append(due)
        elif self.phase is Phase.GUARDING:
            times.append(self.runs.guard_due(self.window.last_change, self.config.settle))
        elif self.phase is Phase.CHECKING:
            times.append(self.runs.check_due())
        return min(times)

    def status(self, now: float) -> str:
        if self.phase is Phase.GUARDING:
            verdict = self.last_verdict.summary if self.last_verdict else "not checked yet"
            head = "guarding" if self.role is Role.GUARD else "watching"
            changing = f"; rules: {self.window.changes} change(s), settling" \
                if self.runs.unchecked_since is not None else ""
            return f"{head}: {verdict}; {self.state.repairs_total} repair(s){changing}"
        if self.phase is Phase.CHECKING:
            head = f"{self.timed_out}; " if self.timed_out else ""
            return head + "compat: checking that iptables-nft can read the settled rules"
        if self.phase is Phase.DONE:
            return self.last_status
        waiting = self.stages.waiting()
        if waiting:
            return f"{self.stages.intro()}: {waiting}"
        settle = self.config.stage_settle(self.stages.current)
        quiet = min(self.window.quiet_for(now), settle)
        changes = self.window.changes
        return (f"{self.stages.intro()}: rules: {changes} change{'' if changes == 1 else 's'}, "
                f"quiet {quiet:.1f}s of {format_timespan(settle)}")

    @property
    def before_ready(self) -> bool:
        return not self.ready_sent and self.phase is not Phase.DONE

    # -- what happens next --------------------------------------------------------------

    def _step(self, now: float) -> None:
        self.netbird.tick(now)
        batch = self.repairs.next_batch()
        if batch is not None:
            self._out.append(A.RepairRules(*batch))
        if self.phase is not Phase.GUARDING and self.pacer.start(now):
            self._out.append(A.Dump(tuple(self.interest), tuple(sorted(self.watched)),
                                    self.keep_rules))
        if self.runs.start_sweep(repair_busy=self.repairs.in_flight):
            self._out.append(A.RunCompat(repair=True))
        if self.phase is Phase.GATING:
            self._gate_step(now)
        if self.phase is Phase.CHECKING and now >= self.runs.check_due() or \
                self.phase is Phase.GUARDING and \
                now >= self.runs.guard_due(self.window.last_change, self.config.settle):
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
            self._journal("stage-skipped", now, f"{self.stages.intro()}: skipped: {why}")
            if not self._next_stage(now):
                return
        if not self.stages.held():
            return
        if self.stages.first_hold():
            self._journal("stage-held", now, f"{self.stages.intro()}: conditions hold, settling")
        due = self.stages.due(self.window.last_change, self.config)
        if due is not None and now >= due and self.window.baseline is not None and \
                not self.confirm.busy and not self.pacer.stale:
            # The window has run: is the scope as it was after the last change?
            self.confirm.ask_genid()
            self._out.append(A.QueryGeneration())

    def _window_quiet(self, now: float) -> None:
        if self.phase is Phase.GATING:
            if self.stages.held():
                self._complete_stage(now)
        elif self.phase is Phase.GUARDING and self.runs.unchecked_since is not None:
            self._run_verdict()

    def _run_verdict(self) -> None:
        if self.runs.start_verdict():
            self._out.append(A.RunCompat(repair=self.repair_policy == "repair"))

    def _complete_stage(self, now: float) -> None:
        stage = self.stages.current
        self._journal("settled", now, f"{self.stages.intro()}: settled, quiet for "
                                      f"{format_timespan(self.config.stage_settle(stage))}")
        self.state = replace(self.state, stage_seconds={
            **self.state.stage_seconds, stage.name: round(now - self.stages.started, 3)})
        self._next_stage(now)

    def _next_stage(self, now: float) -> bool:
        """On to the next stage (journaled); False when the stages are done."""
        if self.stages.advance(now):
            self._journal("stage-start", now, self.stages.intro())
            return True
        self._go(Trigger.STAGES_DONE)
        return False

    def _timeout(self, now: float) -> None:
        reason = f"timed out in {self.status(now)}"
        self._journal("timeout", now, reason)
        if self.config.on_timeout == "fail":
            self._notify(STATUS=f"failed: {reason}", ERRNO=errno.ETIMEDOUT)
            self.state = replace(self.state, phase="failed")
            self._exit(EXIT_FAILED, reason)
            return
        # proceed: stop waiting, still run the compat probe, then READY degraded.
        self.timed_out = reason
        self._go(Trigger.TIMED_OUT)

    # -- nf_tables events, dumps, generations ---------------------------------------------

    def _on_events(self, now: float, events: tuple[Event, ...]) -> None:
        for event in events:
            if event.table is None:           # NEWGEN closes a transaction
                self.last_seen_genid = self.genid = event.genid
                if self.txn_touched and not self.txn_counted:
                    self._foreign_change(now)
                self.txn_touched = self.txn_counted = False
                self.repairs.committed(event.genid)
                continue
            self.repairs.forget(event)  # ours too: the worker's probe may have repaired it
            if event.kind == "NEWTABLE" and event.table == NETBIRD_TABLE:
                self.netbird.ask()  # Netbird (re)started: what does it run with now?
            if event.portid in self.own_portids:
                if event.table in self.watched or event.table in self.interest:
                    # Our own repair: take the baseline again; the window runs on.
                    self.window.own_change()
                    self.confirm.changed()
                    self.pacer.invalidate()
                continue
            self._judge_added(event)
            if event.table in self.watched:
                self.txn_touched = True
                self.pacer.changed(now)
            elif event.table in self.interest:
                self.pacer.changed(now)
        if self.txn_touched and not self.txn_counted:
            # Its NEWGEN is still on the way: count it now, when we read it, never earlier.
            self._foreign_change(now)
            self.txn_counted = True

    def _judge_added(self, event: Event) -> None:
        """Repair at once: queue each rule just added that needs it (and, after READY,
        say at once of one that cannot be repaired)."""
        if event.kind != "NEWRULE" or event.rule is None:
            return
        repair = self.repair_policy == "repair"
        if not repair and self.phase is not Phase.GUARDING:
            return  # before READY the verdict says it
        finding = judge_added_rule(event.rule, self.compat_profiles or PROFILES,
                                   self.setup or Setup())
        if finding is None:
            return
        if repair and finding.repairable:
            self.repairs.add(event.rule, finding.reason)
        elif finding.blocking:
            self._log("warning", f"{finding.rule.ref} was just added and iptables-nft cannot "
                                 f"read it: {finding.reason}")

    def _on_events_lost(self, now: float) -> None:
        self.window.lost_events(now)
        self.confirm.changed()
        self.resyncs_total += 1
        self._log("warning", "nf_tables events overflowed the socket; resyncing")
        self.pacer.changed(now)
        self._note_unchecked(now)
        self.txn_touched = self.txn_counted = False
        # A rule to repair may have been among the lost: look at everything once.
        self.repairs.clear()
        self.runs.want_sweep(self.repair_policy == "repair")

    def _on_dumped(self, inp: I.Dumped) -> None:
        now, snap = inp.now, inp.snapshot
        # Current only if no transaction we have seen came after it.
        current = self.last_seen_genid is None or snap.genid >= self.last_seen_genid
        self.pacer.dumped(now, inp.cost, current)
        self.facts = replace(self.facts, snapshot=snap)
        self.genid, self.digest = snap.genid, inp.digest
        answer = self.confirm.on_dump(snap.genid, inp.digest, current, self.window)
        if answer is Answer.QUIET:
            self._observe(now)
            self._window_quiet(now)
            return
        if answer is Answer.CHANGED:
            self.window.change_behind_our_back(now, snap.genid, inp.digest)
            self._note_unchecked(now)
        if self.window.baseline is None and current:
            self.window.set_baseline(snap.genid, inp.digest)
        if self.announce_start:
            self.announce_start = False
            self._journal("stage-start", now, self.stages.intro())
        self._observe(now)

    def _on_generation(self, now: float, genid: int) -> None:
        answer = self.confirm.on_generation(genid, self.window)
        if answer is Answer.QUIET:
            self._window_quiet(now)
        elif answer is Answer.NEED_DIGEST:
            self.pacer.ask_now(now)  # something committed: did the watched scope change?

    def _foreign_change(self, now: float) -> None:
        self.window.change(now)
        self.confirm.changed()
        self.changes_total += 1
        self.last_change_at = self._wall(now)
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
        waiting = self.stages.observe(self.facts, now, self.pacer.rules_since)
        if waiting is not None:
            self._go(Trigger.CONDITION_LOST)
            self._journal("stage-start", now, f"back to {self.stages.intro()}: a condition "
                                              f"stopped holding ({waiting})")

    # -- compat runs and repairs ------------------------------------------------------------

    def _on_compat_done(self, now: float, result: ProbeResult) -> None:
        run = self.runs.finished()
        if self.runs.refused_again(result.conflict):
            self.runs.in_flight = run  # the ruleset moved under the repair: look again
            self._out.append(A.RunCompat(repair=True if run is Run.SWEEP else
                                         self.repair_policy == "repair"))
            return
        self.compat_profiles = result.profiles
        self.setup = result.setup or self.setup
        self._note_repairs(now, result.repaired)
        if result.removed:
            self.state = replace(self.state, netbird_copies_removed_total=(
                self.state.netbird_copies_removed_total + len(result.removed)))
            self._journal("removed", now, f"deleted {len(result.removed)} dead copies of "
                                          f"Netbird's accept rules (each after an identical "
                                          f"rule: no packet reached it): "
                                          f"{', '.join(r.ref for r in result.removed)}")
        self._note_conflicts(now, result.conflicts)
        if result.netbird is not None:
            self.state = replace(self.state,
                                 netbird_untagged_copies=result.netbird.untagged_copies)
            if result.netbird.native:
                self.netbird.explain()
        if result.conflict:
            self._log("warning", "compat: the ruleset changed during every repair attempt; "
                                 "settling again")
            self._settle_again(now)
            return
        if run is Run.SWEEP:
            return
        verdict = judge(result, self.repair_policy)
        self._record_verdict(now, verdict, result)
        if self.phase is Phase.CHECKING:
            self._after_check(now, verdict)

    def _settle_again(self, now: float) -> None:
        """The ruleset moved under every repair attempt: let it settle, then judge."""
        more = self.runs.settle_again()
        self.window.change(now, count=False)
        self.confirm.changed()
        self.pacer.changed(now)
        if self.phase is Phase.GUARDING:
            self._note_unchecked(now)
        elif self.phase is Phase.CHECKING and self.stages.stages and more:
            self._go(Trigger.RULES_MOVED)
            self.stages.redo_last()
        elif self.phase is Phase.CHECKING:
            self.runs.not_before = now + self.config.settle

    def _after_check(self, now: float, verdict: Verdict) -> None:
        """The verdict before READY: READY, or exit 3 (the gate only; a guard is READY
        whatever it found: it gates nothing)."""
        if verdict.exit_code and self.role is Role.GATE:
            reason = verdict.summary
            self._notify(STATUS=f"failed: {reason}", ERRNO=errno.EPROTO)
            self._log("error", f"{reason}. k3s would die on it: fwgate holds it back. Way out: "
                               f"delete or rewrite the rule (`fwgate compat` names it), or set "
                               f"compat.on_incompatible: warn to let k3s start anyway")
            self.state = replace(self.state, phase="failed")
            self._exit(EXIT_INCOMPATIBLE, reason)
            return
        degraded = "; ".join(filter(None, [self.timed_out, verdict.summary.removeprefix(
            "degraded: ") if verdict.degraded else None]))
        if self.role is Role.GUARD:
            status = f"ready: guarding; {verdict.summary}"
        else:
            status = (f"ready (degraded: {degraded})" if degraded else
                      f"ready: rules settled after {now - self.started:.1f}s")
        self.ready_sent = True
        self.state = replace(self.state, ready_at=self._wall(now))
        self._notify(READY=1, STATUS=status)
        self.last_status = status
        self._journal("ready", now, status, stage="ready")
        if not self.keep_guarding:
            self.state = replace(self.state, phase="ready")
            self._exit(EXIT_OK, status)
            return
        self._go(Trigger.READY_GUARDING)
        self.state = replace(self.state, phase="guarding")
        self._log("info", f"READY sent; guarding {', '.join(map(str, sorted(self.watched)))}")

    def _on_repair_done(self, inp: I.RepairDone) -> None:
        # Refused: another transaction came first (the executor fed us its events
        # already); the queue tries again on the newest generation, or gives up.
        if self.repairs.done(inp.repairs, inp.produced_genid, self.last_seen_genid):
            self.runs.want_sweep()  # still moving: look at everything once it is our turn
        if inp.produced_genid is not None:
            self._note_repairs(inp.now, inp.repairs)

    def _note_repairs(self, now: float, repairs: tuple[Repair, ...]) -> None:
        if not repairs:
            return
        lines = [repair_line(r) for r in repairs]
        for line in lines:
            self._journal("repaired", now, f"repaired {line}")
        self.state = replace(self.state, repairs_total=self.state.repairs_total + len(lines),
                             repairs=self.state.kept("repairs", *({"at": self._wall(now),
                                                                    "rule": line} for line in lines)))
        if any(is_native_netbird_rule(r.rule) for r in repairs):
            self.netbird.explain()
        unit = self.config.after_ready.restart_after_repair
        if self.ready_sent and unit and now - self.last_restart >= \
                self.config.after_ready.restart_interval:
            self._out.append(A.RestartUnit(unit))

    def _note_conflicts(self, now: float, conflicts: tuple) -> None:
        """Packet-mark conflicts: each new one once in the journal (kube-router installs
        its chains after k3s starts, so they appear after READY). Never blocking."""
        conflicts = harms(conflicts)  # bits shared without harm are no alarm
        self.state = replace(self.state, mark_conflicts=tuple(
            {"text": conflict_text(c), "bits": f"{c.bits:#x}", "writer": c.writer.owner,
             "reader": c.reader.owner, "effect": c.effect} for c in conflicts))
        for c in conflicts:
            if c.ident not in self.seen_conflicts:
                self.seen_conflicts.add(c.ident)
                self._journal("conflict", now, conflict_text(c))

    def _record_verdict(self, now: float, verdict: Verdict, result: ProbeResult) -> None:
        self.state = replace(
            self.state, compat_checked_at=self._wall(now), incompatible=tuple(verdict.blocking),
            compat_warnings=tuple(verdict.warnings),
            compat_binaries=tuple({"path": b.path, "version": b.version, "mode": b.mode,
                                   "role": b.role, "source": b.source} for b in result.binaries),
            compat_versions=tuple(result.report.versions),
            compat_disagreements=sum(len(c.disagreements) for c in result.crosschecks))
        for check in result.crosschecks:
            if not check.ran:
                self._log("warning", f"compat: {check.verdict.binary} does not run "
                                     f"(--version failed); relying on the reader")
            for line in check.lines():
                self._log("warning", f"compat: reader and iptables disagree: {line}")
        changed = self.last_verdict is None or \
            (verdict.blocking, verdict.warnings) != (self.last_verdict.blocking,
                                                     self.last_verdict.warnings)
        self.last_verdict = verdict
        if changed and verdict.degraded:
            self._journal("incompatible", now, verdict.summary)
        if self.phase is Phase.GUARDING and verdict.blocking and changed:
            policy = self.repair_policy
            why = ("fwgate cannot re-encode it; delete or rewrite the rule" if policy == "repair"
                   else f"compat.on_incompatible is {policy}, so fwgate leaves it; "
                        f"`fwgate repair` re-encodes the shapes it knows")
            self._log("error", f"{verdict.summary}: k3s dies on it at its next policy sync; "
                               f"{why}")

    # -- systemd, Netbird, signals ----------------------------------------------------------

    def _on_unit_restarted(self, inp: I.UnitRestarted) -> None:
        if inp.error:
            self._log("warning", inp.error)
        elif inp.was:
            self.last_restart = inp.now
            self._log("info", f"restarted {inp.unit} (it was {inp.was}) after the repair")
            self.state = replace(self.state, restarts=self.state.kept(
                "restarts", {"at": self._wall(inp.now), "unit": inp.unit, "was": inp.was}))

    def _on_netbird_read(self, inp: I.NetbirdRead) -> None:
        found = prevention(inp.env)
        explain = self.netbird.answered(inp.now, recheck=self.keep_guarding)
        if found.json() != self.state.prevention:
            self.state = replace(self.state, prevention=found.json())
            self._journal("prevention", inp.now,
                          f"prevention {'in force' if found.in_force else 'NOT in force'}: "
                          f"{found.why}", level=None if found.in_force else "warning")
        if explain:
            lines = explain_fallback(inp.env)
            self.state = replace(self.state, netbird_fallback=tuple(lines))
            self._journal("native-fallback", inp.now, " ".join(lines))

    def _on_stop(self, inp: I.Stop) -> None:
        before = not self.ready_sent
        self._notify(STOPPING=1, STATUS="stopping" + (": no READY was sent" if before else ""))
        self._log("info", f"{inp.signal}: stopping" + (" before READY" if before else ""))
        self.state = replace(self.state, phase="stopped")
        code = 130 if before and inp.signal == "SIGINT" else EXIT_OK
        self._exit(code, f"stopped by {inp.signal}", Trigger.STOPPED)

    def _on_reload(self, inp: I.Reload) -> None:
        self.state = replace(self.state, config_error=None)
        self.netbird.ask()
        if self.ready_sent:
            self._log("info", f"SIGHUP: reloaded {inp.config.source}; checking the rules again")
            trigger = Trigger.RELOADED_GUARDING
        else:
            self._log("info", f"SIGHUP: reloaded {inp.config.source}; starting the gate over")
            has_stages = bool(inp.config.stages) and self.role is Role.GATE
            trigger = Trigger.RELOADED_STAGES if has_stages else Trigger.RELOADED_NO_STAGES
        self.repairs.clear()
        self._configure(inp.config, inp.now, trigger)
        if self.phase is Phase.GATING:
            self._journal("stage-start", inp.now, self.stages.intro())

    # -- output -----------------------------------------------------------------------------

    def _stage_name(self) -> str:
        if self.phase is Phase.GATING and not self.stages.done:
            return self.stages.current.name
        return self.phase.value if self.phase is not Phase.CHECKING else "compat"

    def _wall(self, now: float) -> float:
        return now + self.wall_offset

    def _journal(self, kind: str, now: float, message: str, stage: str | None = None,
                 level: str | None = None) -> None:
        """With the quiet window's baseline, else what was last seen (the guard keeps
        no baseline: its checks read everything afresh)."""
        baseline = self.window.baseline
        self._out.append(A.Journal(kind, stage or self._stage_name(), message,
                                   int((now - self.started) * 1000),
                                   baseline.genid if baseline else self.genid,
                                   baseline.digest if baseline else self.digest, level))

    def _log(self, level: str, message: str) -> None:
        self._out.append(A.Log(level, message))

    def _notify(self, **fields: object) -> None:
        self._out.append(A.Notify(tuple(fields.items())))

    def _exit(self, code: int, status: str, trigger: Trigger = Trigger.EXIT) -> None:
        self._go(trigger)
        self.last_status = status
        self._out.append(A.Exit(code, status))

    def _publish(self, now: float, force: bool = False) -> None:
        """STATUS when it changed; the state file with every transition, and at least
        every HEARTBEAT seconds (status calls a state older than a few of them stale)."""
        status = self.status(now) if self.phase is not Phase.DONE else self.last_status
        journaled = any(isinstance(a, (A.Journal, A.Log, A.Exit)) for a in self._out)
        force = force or self.heartbeat.is_due(now)
        if status != self.last_status and self.phase is not Phase.DONE:
            self.last_status = status
            self._notify(STATUS=status)
        elif not (force or journaled or self.phase is Phase.DONE):
            return
        stage = self.stages.current if self.phase is Phase.GATING else None
        self.state = replace(
            self.state, status=status, stage=stage.name if stage else None,
            updated_at=self._wall(now), genid=self.genid, digest=self.digest,
            changes_total=self.changes_total, resyncs_total=self.resyncs_total,
            last_change_at=self.last_change_at)
        self.heartbeat.beat(now)
        self._out.append(A.SaveState(self.state))  # frozen: the executor may keep it
