"""The gate's whole life as one pure state machine.

    machine = Machine(config, now, Role.GATE, own_portids={sock.portid})
    actions = machine.start(now)
    actions = machine.handle(NftEvents(now, events))   # ... and so on

Phases, in order:

    GATING    walk the stages: a stage is done when its conditions hold and the
              watched scope has been quiet for its settle window since both the
              conditions began to hold and the last foreign change, confirmed by the
              generation id (else the digest). A condition that stops holding sends
              the gate back to its stage; the gate's `timeout` is a deadline.
    CHECKING  the compat probe, then READY=1 (or exit 3: the one policy says so).
    GUARDING  after READY: nothing is gated any more. After every change to the
              watched scope the probe runs again and reports: once it has been quiet
              for a window, or at the latest BUSY_WINDOWS windows after the change.
    DONE      an Exit action was emitted.

In every phase a rule of a repairable shape is re-encoded as soon as the event
that added it is read (with `on_incompatible: repair`), and fwgate's own repair
transactions, recognised by the netlink port their events carry, never restart
the quiet window: they only make it take its baseline again.

The machine does no I/O and reads no clock: inputs carry `now`; `status()` and
`next_wakeup()` are questions without side effects.
"""
from __future__ import annotations

import enum
import errno
import math
from dataclasses import replace
from typing import TYPE_CHECKING

from .. import __version__
from ..config import ChainExists, Config, Stage
from ..errors import EXIT_FAILED, EXIT_INCOMPATIBLE, EXIT_OK
from ..model import Facts, Rule, TableRef
from ..netbird import explain_fallback, is_native_netbird_rule, prevention
from ..netlink.nftables import Event
from ..state import State
from ..timespan import format_timespan
from . import actions as A
from . import inputs as I
from .conditions import evaluate, reads_rules, skipped
from .window import QuietWindow

if TYPE_CHECKING:
    from ..compat.impact import Setup
    from ..compat.policy import ProbeResult, Verdict
    from ..compat.repair import Repair
# The compat reader and the mark model are imported when first needed, not at start:
# the gate's first snapshot (and its start-up) must not wait on them.

DEBOUNCE = 0.02      # dump once the event stream has paused this long
PACE = 2.0           # after a dump that took t, wait 2t: at most a third of the time dumping
MAX_COMPAT_ROUNDS = 3  # repair conflicts before READY: settle again at most this often
# GUARDING on a busy node (kube-router restores ip filter at every sync) the scope may
# never be quiet: check anyway once the oldest unchecked change is this many windows old.
BUSY_WINDOWS = 3
MAX_REPAIR_RETRIES = 5  # a refused repair batch is tried again on the newer generation
HEARTBEAT = 10.0     # a running gate or guard publishes its state at least this often
NETBIRD_TABLE = TableRef("ip", "netbird")  # made at every Netbird start
NETBIRD_RECHECK = 300.0  # guarding: ask again what netbird.service runs with (an iptables
                         # installed or removed, a drop-in) this often


class Role(enum.Enum):
    GATE = "gate"     # `fwgate run`: stages, compat, READY (then exit, or guard)
    GUARD = "guard"   # `fwgate guard`: compat, READY at once, then guard for good


class Phase(enum.Enum):
    GATING = "gating"
    CHECKING = "checking"
    GUARDING = "guarding"
    DONE = "done"


class Machine:
    def __init__(self, config: Config, now: float, role: Role = Role.GATE, *,
                 own_portids: frozenset[int] | set[int] = frozenset(),
                 keep_guarding: bool | None = None,
                 wall_offset: float = 0.0, pid: int = 0, netns: str | None = None,
                 facts: Facts | None = None, setup: "Setup | None" = None,
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
        self.facts = facts or Facts()  # links and units as the watchers first saw them
        self.setup = setup             # which k3s components run: what breaks matters
        self.compat_profiles = None    # the readers to judge a new rule for: every version
                                       # until a probe has said which binaries k3s runs
        self.ready_sent = False
        self.last_status = ""
        self.last_verdict: "Verdict | None" = None
        self.last_restart = -math.inf
        self.explained_netbird = self.explain_wanted = False
        self.netbird_wanted = True       # what netbird.service runs with: asked at start
        self.next_netbird_read = math.inf
        self.next_heartbeat = now + HEARTBEAT
        self.announce_start = False
        self.seen_conflicts: set[tuple] = set()
        self.last_seen_genid: int | None = None
        # repair at once: rules waiting for their transaction's NEWGEN, and the batch in flight
        self.pending_repairs: dict[tuple, tuple[Rule, str]] = {}
        self.repair_genid: int | None = None
        self.repair_in_flight = False
        self.repair_retries = 0         # batches refused in a row (the ruleset moved on)
        self.sweep_wanted = False       # events were lost: a full probe finds what we missed
        self.compat_in_flight: str | None = None  # "verdict" | "sweep": one probe at a time
        self._out: list[A.Action] = []
        self._configure(config, now)

    # -- set-up -----------------------------------------------------------------------

    def _configure(self, config: Config, now: float) -> None:
        """(Re)start with `config`: before READY the gate starts over; after it the
        watched tables settle and are checked again."""
        self.config = config
        self.state.config_source = config.source
        self.stages: tuple[Stage, ...] = config.stages if self.role is Role.GATE else ()
        self.watched = frozenset(config.watch)
        self.interest = config.tables_of_interest() if self.stages else tuple(config.watch)
        self.keep_rules = tuple((c.table, c.chain) for s in self.stages for c in s.conditions
                                if isinstance(c, ChainExists))
        self.window = QuietWindow(now)
        self.serial = 0                 # bumped by every change: answers to older questions are stale
        self.stale, self.dump_in_flight = True, False
        self.last_event, self.next_dump = -math.inf, now
        self.rules_since = now          # when the state the last snapshot shows began
        self.confirm: tuple[str, int] | None = None   # ("genid" | "digest", serial) in flight
        self.compat_rounds = 0
        self.check_not_before = now     # CHECKING: after a repair conflict, let it settle
        self.txn_touched = self.txn_counted = False
        self.unchecked_since: float | None = None  # GUARDING: first change not checked yet
        self.timed_out: str | None = None
        if self.ready_sent:
            self.phase = Phase.GUARDING
            self.unchecked_since = now
            return
        self.index = 0
        self.stage_started = now
        self.held_since: dict[tuple[int, int], float] = {}
        self.waiting_for: dict[tuple[int, int], str] = {}
        self.announced_held = False
        self.phase = Phase.GATING if self.stages else Phase.CHECKING

    def start(self, now: float) -> list[A.Action]:
        """The first actions: announce the first stage (or the first check)."""
        self._out = []
        self._observe(now)
        if self.phase is Phase.GATING:
            # Journaled with the first snapshot's generation and digest, a dump away.
            self.announce_start = True
            # Rules already there had no event: repair them at once too.
            self.sweep_wanted = self.config.compat.on_incompatible == "repair"
        self._step(now)
        self._publish(now, force=True)
        self._ask_last()
        return self._out

    # -- the one entry ----------------------------------------------------------------

    def handle(self, event: I.Input) -> list[A.Action]:
        self._out = []
        if self.phase is not Phase.DONE:
            getattr(self, "_on_" + type(event).__name__)(event)
            if self.phase is not Phase.DONE:
                self._step(event.now)
            self._publish(event.now)
            self._ask_last()
        return self._out

    def _ask_last(self) -> None:
        """D-Bus round trips go last in their batch: nothing waits on them."""
        if (self.netbird_wanted or self.explain_wanted) and self.phase is not Phase.DONE:
            self.netbird_wanted = False
            self._out.append(A.ReadNetbird())

    # -- questions --------------------------------------------------------------------

    def next_wakeup(self) -> float:
        """When to call handle(Tick) if nothing arrives first (math.inf: never)."""
        if self.phase is Phase.DONE:
            return math.inf
        times = [self.next_heartbeat if self.keep_guarding or self.before_ready else math.inf,
                 self.next_netbird_read]
        if self.stale and not self.dump_in_flight and self.phase is not Phase.GUARDING:
            times.append(self._dump_due())
        # A window's end matters once its baseline is in: a pending dump comes first.
        window_open = not self.stale and self.confirm is None
        if self.phase is Phase.GATING:
            times.append(self._deadline())
            due = self._stage_due()
            if due is not None and window_open:
                times.append(due)
        elif self.phase is Phase.GUARDING and self.unchecked_since is not None \
                and self.compat_in_flight is None:
            times.append(min(self._guard_due()))
        elif self.phase is Phase.CHECKING and self.compat_in_flight is None:
            times.append(self.check_not_before)
        return min(times)

    def status(self, now: float) -> str:
        if self.phase is Phase.GUARDING:
            verdict = self.last_verdict.summary if self.last_verdict else "not checked yet"
            head = "guarding" if self.role is Role.GUARD else "watching"
            changing = f"; rules: {self.window.changes} change(s), settling" \
                if self.unchecked_since is not None else ""
            return f"{head}: {verdict}; {self.state.repairs_total} repair(s){changing}"
        if self.phase is Phase.CHECKING:
            head = f"{self.timed_out}; " if self.timed_out else ""
            return head + "compat: checking that iptables-nft can read the settled rules"
        if self.phase is Phase.DONE:
            return self.last_status
        stage = self.stages[self.index]
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

    @property
    def before_ready(self) -> bool:
        return not self.ready_sent and self.phase is not Phase.DONE

    # -- inputs -----------------------------------------------------------------------

    def _on_NftEvents(self, inp: I.NftEvents) -> None:
        now = inp.now
        for event in inp.events:
            if event.table is None:           # NEWGEN closes a transaction
                self.last_seen_genid = event.genid
                self.state.genid = event.genid
                if self.txn_touched and not self.txn_counted:
                    self._foreign_change(now)
                self.txn_touched = self.txn_counted = False
                if self.pending_repairs and event.genid is not None:
                    self.repair_genid = event.genid
                continue
            self._forget_gone(event)  # ours too: the worker's probe may have repaired it
            if event.kind == "NEWTABLE" and event.table == NETBIRD_TABLE:
                self.netbird_wanted = True  # Netbird (re)started: what does it run with now?
            if event.portid in self.own_portids:
                if event.table in self.watched or event.table in self.interest:
                    self._own_change()
                continue
            self._track_added(event)
            if event.table in self.watched:
                self.txn_touched = True
                self._mark_stale(now)
            elif event.table in self.interest:
                self._mark_stale(now)
        if self.txn_touched and not self.txn_counted:
            # Its NEWGEN is still on the way: count it now, when we read it, never earlier.
            self._foreign_change(now)
            self.txn_counted = True

    def _track_added(self, event: Event) -> None:
        """Repair at once: remember each rule just added that needs it (and, after
        READY, say at once of one that cannot be repaired)."""
        if event.kind != "NEWRULE" or event.rule is None:
            return
        repair = self.config.compat.on_incompatible == "repair"
        if not repair and self.phase is not Phase.GUARDING:
            return  # before READY the verdict says it
        from ..compat.impact import Setup
        from ..compat.policy import judge_added_rule
        from ..compat.profiles import PROFILES
        finding = judge_added_rule(event.rule, self.compat_profiles or PROFILES,
                                   self.setup or Setup())
        if finding is None:
            return
        if repair and finding.repairable:
            r = event.rule
            self.pending_repairs[(r.family, r.table, r.chain, r.handle)] = (r, finding.reason)
            self.repair_genid = None  # wait for this transaction's NEWGEN
        elif finding.blocking:
            self._warn_unreadable_rule(finding.rule.ref, finding.reason)

    def _forget_gone(self, event: Event) -> None:
        """A rule waiting for its repair went away first."""
        if not self.pending_repairs:
            return
        if event.kind == "DELRULE" and event.rule is not None:
            r = event.rule
            self.pending_repairs.pop((r.family, r.table, r.chain, r.handle), None)
        elif event.kind == "DELTABLE" and event.table is not None:  # its rules go unannounced
            for key in [k for k in self.pending_repairs if (k[0], k[1]) == (event.table.family,
                                                                          event.table.name)]:
                del self.pending_repairs[key]

    def _on_EventsLost(self, inp: I.EventsLost) -> None:
        self.window.lost_events(inp.now)
        self.serial += 1
        self.state.resyncs_total += 1
        self._log("warning", "nf_tables events overflowed the socket; resyncing")
        self._mark_stale(inp.now)
        self._note_unchecked(inp.now)
        self.txn_touched = self.txn_counted = False
        # A rule to repair may have been among the lost: look at everything once.
        self.pending_repairs.clear()
        self.sweep_wanted = self.config.compat.on_incompatible == "repair"

    def _on_Dumped(self, inp: I.Dumped) -> None:
        now, snap = inp.now, inp.snapshot
        self.dump_in_flight = False
        self.next_dump = now + PACE * inp.cost
        self.facts = replace(self.facts, snapshot=snap)
        self.state.genid, self.state.digest = snap.genid, inp.digest
        # Current only if no transaction we have seen came after it.
        current = self.last_seen_genid is None or snap.genid >= self.last_seen_genid
        if current:
            self.stale = False
        confirming = self.confirm is not None and self.confirm[0] == "digest"
        if confirming and self.confirm[1] == self.serial and current:
            self.confirm = None
            if self.window.same_as_baseline(snap.genid, inp.digest):
                self._observe(now)
                self._window_quiet(now)
                return
            self.window.change_behind_our_back(now, snap.genid, inp.digest)
            self.serial += 1
            self._note_unchecked(now)
        elif confirming:
            self.confirm = None
        if self.window.baseline is None and current:
            self.window.set_baseline(snap.genid, inp.digest)
        if self.announce_start:
            self.announce_start = False
            self._journal("stage-start", now, self._stage_intro())
        self._observe(now)

    def _on_DumpFailed(self, inp: I.DumpFailed) -> None:
        """The ruleset changed under every dump we tried: that is a change too."""
        self.dump_in_flight = False
        self._foreign_change(inp.now)
        self._mark_stale(inp.now)

    def _on_Generation(self, inp: I.Generation) -> None:
        if self.confirm is None or self.confirm != ("genid", self.serial):
            self.confirm = None  # a change came in meanwhile: the window runs again
            return
        if self.window.unchanged_since_baseline(inp.genid):
            self.confirm = None
            self._window_quiet(inp.now)
            return
        # Something committed: did the watched scope change? The digest tells.
        self.confirm = ("digest", self.serial)
        self.stale = True
        self.next_dump = inp.now

    def _on_LinksChanged(self, inp: I.LinksChanged) -> None:
        self.facts = replace(self.facts, links=dict(inp.links))
        self._observe(inp.now)

    def _on_UnitsChanged(self, inp: I.UnitsChanged) -> None:
        self.facts = replace(self.facts, units=dict(inp.units))
        self._observe(inp.now)

    def _on_CompatDone(self, inp: I.CompatDone) -> None:
        now, result = inp.now, inp.result
        purpose, self.compat_in_flight = self.compat_in_flight, None
        self.compat_profiles = result.profiles
        self.setup = result.setup or self.setup
        self._note_repairs(now, result.repaired)
        if result.removed:
            self.state.netbird_copies_removed_total += len(result.removed)
            self._journal("removed", now, f"deleted {len(result.removed)} dead copies of "
                                          f"Netbird's accept rules (each after an identical "
                                          f"rule: no packet reached it): "
                                          f"{', '.join(r.ref for r in result.removed)}")
        self._note_conflicts(now, result.conflicts)
        if result.netbird is not None:
            self.state.netbird_untagged_copies = result.netbird.untagged_copies
            if result.netbird.native:
                self._explain_netbird()
        if result.conflict:
            self._log("warning", "compat: the ruleset changed during every repair attempt; "
                                 "settling again")
            self._settle_again(now)
            return
        if purpose == "sweep":
            return
        from ..compat.policy import judge
        verdict = judge(result, self.config.compat.on_incompatible)
        self._record_verdict(now, verdict, result)
        if self.phase is Phase.CHECKING:
            self._after_check(now, verdict)

    def _on_CompatFailed(self, inp: I.CompatFailed) -> None:
        """Guarding: the check failed (a binary vanished in an upgrade, say): say so, and
        check again a window later."""
        self.compat_in_flight = None
        self._log("warning", f"compat: the check failed: {inp.reason}; trying again")
        self._note_unchecked(inp.now)
        self.check_not_before = inp.now + self.config.settle  # not in a tight loop

    def _on_RepairDone(self, inp: I.RepairDone) -> None:
        self.repair_in_flight = False
        if inp.produced_genid is None:
            # Another transaction came first (the executor fed us its events already):
            # the rules still pending are still there; try again on the newest generation.
            self.repair_retries += 1
            if self.repair_retries <= MAX_REPAIR_RETRIES and self.last_seen_genid is not None:
                self.repair_genid = self.last_seen_genid
            else:  # still moving: look at everything once it is our turn
                self.pending_repairs.clear()
                self.sweep_wanted = True
            return
        self.repair_retries = 0
        for r in inp.repairs:
            self.pending_repairs.pop((r.rule.family, r.rule.table, r.rule.chain, r.rule.handle),
                                     None)
        self._note_repairs(inp.now, inp.repairs)

    def _on_UnitRestarted(self, inp: I.UnitRestarted) -> None:
        if inp.error:
            self._log("warning", inp.error)
        elif inp.was:
            self.last_restart = inp.now
            self._log("info", f"restarted {inp.unit} (it was {inp.was}) after the repair")
            self.state.restarts = (self.state.restarts + [
                {"at": self._wall(inp.now), "unit": inp.unit, "was": inp.was}])[-State.MAX_KEPT:]

    def _on_NetbirdRead(self, inp: I.NetbirdRead) -> None:
        found = prevention(inp.env)
        if self.keep_guarding:
            self.next_netbird_read = inp.now + NETBIRD_RECHECK
        if found.json() != self.state.prevention:
            self.state.prevention = found.json()
            self._journal("prevention", inp.now,
                          f"prevention {'in force' if found.in_force else 'NOT in force'}: "
                          f"{found.why}", level=None if found.in_force else "warning")
        if self.explain_wanted:
            self.explain_wanted, self.explained_netbird = False, True
            lines = explain_fallback(inp.env)
            self.state.netbird_fallback = list(lines)
            self._journal("native-fallback", inp.now, " ".join(lines))

    def _on_ConfigRejected(self, inp: I.ConfigRejected) -> None:
        self.state.config_error = inp.reason
        self._log("error", f"SIGHUP: keeping the running config ({self.config.source}): "
                           f"{inp.reason}")

    def _on_Tick(self, inp: I.Tick) -> None:
        pass  # _step looks at the clock

    def _on_Stop(self, inp: I.Stop) -> None:
        before = not self.ready_sent
        self._notify(STOPPING=1, STATUS="stopping" + (": no READY was sent" if before else ""))
        self._log("info", f"{inp.signal}: stopping" + (" before READY" if before else ""))
        self.state.phase = "stopped"
        code = 130 if before and inp.signal == "SIGINT" else EXIT_OK
        self._exit(code, f"stopped by {inp.signal}")

    def _on_Reload(self, inp: I.Reload) -> None:
        self.state.config_error = None
        self.netbird_wanted = True
        if self.ready_sent:
            self._log("info", f"SIGHUP: reloaded {inp.config.source}; checking the rules again")
        else:
            self._log("info", f"SIGHUP: reloaded {inp.config.source}; starting the gate over")
        self.pending_repairs.clear()
        self._configure(inp.config, inp.now)
        if self.phase is Phase.GATING:
            self._journal("stage-start", inp.now, self._stage_intro())

    # -- what happens next --------------------------------------------------------------

    def _step(self, now: float) -> None:
        if now >= self.next_netbird_read:
            self.next_netbird_read, self.netbird_wanted = math.inf, True
        if self.pending_repairs and self.repair_genid is not None and not self.repair_in_flight:
            self._emit_repair()
        if self.stale and not self.dump_in_flight and now >= self._dump_due() and \
                self.phase is not Phase.GUARDING:
            self.dump_in_flight = True
            self._out.append(A.Dump(tuple(self.interest), tuple(sorted(self.watched)),
                                    self.keep_rules))
        if self.sweep_wanted and self.compat_in_flight is None and not self.repair_in_flight:
            self.sweep_wanted = False
            self.compat_in_flight = "sweep"
            self._out.append(A.RunCompat(repair=True))
        if self.phase is Phase.GATING:
            self._gate_step(now)
        if self.phase is Phase.CHECKING and self.compat_in_flight is None \
                and now >= self.check_not_before:
            self.compat_in_flight = "verdict"
            self._out.append(A.RunCompat(repair=self.config.compat.on_incompatible == "repair"))
        elif self.phase is Phase.GUARDING and self.unchecked_since is not None and \
                now >= min(self._guard_due()):
            # Quiet for a window, or never quiet for three: the probe reads it all afresh
            # (no baseline dump: it would only hold up the next repair).
            self._check_now()

    def _gate_step(self, now: float) -> None:
        if now >= self._deadline():
            self._timeout(now)
            return
        if self.announce_start:
            return  # nothing else to decide before the first snapshot is in
        while (why := skipped(self.stages[self.index], self.facts)) is not None:
            self._journal("stage-skipped", now, f"{self._stage_intro()}: skipped: {why}")
            self._next_stage(now)
            if self.phase is not Phase.GATING:
                return
        stage = self.stages[self.index]
        keys = [(self.index, ci) for ci in range(len(stage.conditions))]
        if any(k not in self.held_since for k in keys):
            return
        if not self.announced_held:
            self.announced_held = True
            self._journal("stage-held", now, f"{self._stage_intro()}: conditions hold, settling")
        due = self._stage_due()
        if due is not None and now >= due:
            self._ask_if_quiet()

    def _ask_if_quiet(self) -> None:
        """The window has run: is the scope as it was after the last change?"""
        if self.window.baseline is None or self.confirm is not None or self.stale:
            return  # a dump (baseline or fresh facts) comes first
        self.confirm = ("genid", self.serial)
        self._out.append(A.QueryGeneration())

    def _window_quiet(self, now: float) -> None:
        if self.phase is Phase.GATING:
            if self._stage_held():
                self._complete_stage(now)
        elif self.phase is Phase.GUARDING and self.unchecked_since is not None:
            self._check_now()

    def _complete_stage(self, now: float) -> None:
        stage = self.stages[self.index]
        self._journal("settled", now, f"{self._stage_intro()}: settled, quiet for "
                                      f"{format_timespan(self.config.stage_settle(stage))}")
        # rebound, not changed in place: a published State is never written to again
        self.state.stage_seconds = {**self.state.stage_seconds,
                                    stage.name: round(now - self.stage_started, 3)}
        self._next_stage(now)

    def _next_stage(self, now: float) -> None:
        self.index += 1
        self.stage_started = now
        self.announced_held = False
        if self.index < len(self.stages):
            self._journal("stage-start", now, self._stage_intro())
        else:
            self.phase = Phase.CHECKING

    def _after_check(self, now: float, verdict: "Verdict") -> None:
        """The verdict before READY: READY, or exit 3 (the gate only; a guard is READY
        whatever it found: it gates nothing)."""
        if verdict.exit_code and self.role is Role.GATE:
            reason = verdict.summary
            self._notify(STATUS=f"failed: {reason}", ERRNO=errno.EPROTO)
            self._log("error", f"{reason}. k3s would die on it: fwgate holds it back. Way out: "
                               f"delete or rewrite the rule (`fwgate compat` names it), or set "
                               f"compat.on_incompatible: warn to let k3s start anyway")
            self.state.phase = "failed"
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
        self.state.ready_at = self._wall(now)
        self._notify(READY=1, STATUS=status)
        self.last_status = status
        self._journal("ready", now, status, stage="ready")
        if not self.keep_guarding:
            self.state.phase = "ready"
            self._exit(EXIT_OK, status)
            return
        self.phase = Phase.GUARDING
        self.state.phase = "guarding"
        self._log("info", f"READY sent; guarding {', '.join(map(str, sorted(self.watched)))}")

    def _timeout(self, now: float) -> None:
        reason = f"timed out in {self.status(now)}"
        self._journal("timeout", now, reason)
        if self.config.on_timeout == "fail":
            self._notify(STATUS=f"failed: {reason}", ERRNO=errno.ETIMEDOUT)
            self.state.phase = "failed"
            self._exit(EXIT_FAILED, reason)
            return
        # proceed: stop waiting, still run the compat probe, then READY degraded.
        self.timed_out = reason
        self.phase = Phase.CHECKING

    def _settle_again(self, now: float) -> None:
        """The ruleset moved under every repair attempt: let it settle, then judge."""
        self.compat_rounds += 1
        self.window.change(now, count=False)
        self.serial += 1
        self._mark_stale(now)
        if self.phase is Phase.GUARDING:
            self._note_unchecked(now)
        elif self.phase is Phase.CHECKING and self.stages and self.compat_rounds <= MAX_COMPAT_ROUNDS:
            self.phase = Phase.GATING
            self.index = len(self.stages) - 1
            self.announced_held = False
        elif self.phase is Phase.CHECKING:
            self.check_not_before = now + self.config.settle

    # -- changes ----------------------------------------------------------------------

    def _foreign_change(self, now: float) -> None:
        self.window.change(now)
        self.serial += 1
        self.state.changes_total += 1
        self.state.last_change_at = self._wall(now)
        self._note_unchecked(now)

    def _note_unchecked(self, now: float) -> None:
        if self.phase is Phase.GUARDING and self.unchecked_since is None:
            self.unchecked_since = now

    def _guard_due(self) -> tuple[float, float]:
        """(when the window since the last change ends, when the oldest unchecked
        change has waited long enough on a scope that is never quiet)."""
        return (max(self.window.last_change + self.config.settle, self.check_not_before),
                max(self.unchecked_since + BUSY_WINDOWS * self.config.settle,
                    self.check_not_before))

    def _check_now(self) -> None:
        """GUARDING: run the probe on what is there now (a sweep in flight: after it)."""
        if self.compat_in_flight is None:
            self.unchecked_since = None
            self.compat_in_flight = "verdict"
            self._out.append(A.RunCompat(repair=self.config.compat.on_incompatible == "repair"))

    def _own_change(self) -> None:
        self.window.own_change()
        self.serial += 1
        self.stale = True

    def _mark_stale(self, now: float) -> None:
        self.stale, self.last_event, self.rules_since = True, now, now

    def _observe(self, now: float) -> None:
        """Re-evaluate every condition on the facts; a condition of an earlier stage
        that stopped holding sends the gate back to that stage."""
        if self.phase is not Phase.GATING and not (self.phase is Phase.CHECKING and self.stages):
            return
        back_to = None
        for si, stage in enumerate(self.stages):
            for ci, cond in enumerate(stage.conditions):
                key = (si, ci)
                holds, waiting = evaluate(cond, self.facts)
                if holds:
                    # A rule condition holds since the state the snapshot shows began.
                    self.held_since.setdefault(key, self.rules_since if reads_rules(cond) else now)
                    self.waiting_for.pop(key, None)
                else:
                    if key in self.held_since and si < self.index and back_to is None:
                        back_to = (si, waiting)
                    self.held_since.pop(key, None)
                    self.waiting_for[key] = waiting
        if back_to is not None:
            si, waiting = back_to
            self.phase = Phase.GATING
            self.index, self.stage_started = si, now
            self.announced_held = False
            self._journal("stage-start", now, f"back to {self._stage_intro()}: a condition "
                                              f"stopped holding ({waiting})")

    # -- repairs ----------------------------------------------------------------------

    def _emit_repair(self) -> None:
        from ..compat.repair import plan_rules
        repairs = plan_rules(self.pending_repairs.values())
        if not repairs:
            self.pending_repairs.clear()
            return
        self.repair_in_flight = True
        self._out.append(A.RepairRules(tuple(repairs), self.repair_genid))

    def _note_repairs(self, now: float, repairs: "tuple[Repair, ...]") -> None:
        if not repairs:
            return
        from ..compat.policy import repair_line
        lines = [repair_line(r) for r in repairs]
        for line in lines:
            self._journal("repaired", now, f"repaired {line}")
        self.state.repairs_total += len(lines)
        self.state.repairs = (self.state.repairs + [
            {"at": self._wall(now), "rule": line} for line in lines])[-State.MAX_KEPT:]
        if any(is_native_netbird_rule(r.rule) for r in repairs):
            self._explain_netbird()
        unit = self.config.after_ready.restart_after_repair
        if self.ready_sent and unit and now - self.last_restart >= \
                self.config.after_ready.restart_interval:
            self._out.append(A.RestartUnit(unit))

    def _note_conflicts(self, now: float, conflicts: tuple) -> None:
        """Packet-mark conflicts: each new one once in the journal (kube-router installs
        its chains after k3s starts, so they appear after READY). Never blocking."""
        from ..marks import conflict_text, harms
        conflicts = harms(conflicts)  # bits shared without harm are no alarm
        self.state.mark_conflicts = [
            {"text": conflict_text(c), "bits": f"{c.bits:#x}", "writer": c.writer.owner,
             "reader": c.reader.owner, "effect": c.effect} for c in conflicts]
        for c in conflicts:
            if c.ident not in self.seen_conflicts:
                self.seen_conflicts.add(c.ident)
                self._journal("conflict", now, conflict_text(c))

    def _explain_netbird(self) -> None:
        """Once per run: name the root cause of Netbird's native rules (asked last in
        its batch: the answer takes D-Bus round trips, and READY must not wait on them)."""
        self.explain_wanted = not self.explained_netbird

    def _record_verdict(self, now: float, verdict: "Verdict", result: "ProbeResult") -> None:
        self.state.compat_checked_at = self._wall(now)
        self.state.incompatible = list(verdict.blocking)
        self.state.compat_warnings = list(verdict.warnings)
        self.state.compat_binaries = [
            {"path": b.path, "version": b.version, "mode": b.mode, "role": b.role,
             "source": b.source} for b in result.binaries]
        self.state.compat_versions = list(result.report.versions)
        self.state.compat_disagreements = sum(len(c.disagreements) for c in result.crosschecks)
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
            policy = self.config.compat.on_incompatible
            why = ("fwgate cannot re-encode it; delete or rewrite the rule" if policy == "repair"
                   else f"compat.on_incompatible is {policy}, so fwgate leaves it; "
                        f"`fwgate repair` re-encodes the shapes it knows")
            self._log("error", f"{verdict.summary}: k3s dies on it at its next policy sync; "
                               f"{why}")

    def _warn_unreadable_rule(self, ref: str, reason: str) -> None:
        self._log("warning", f"{ref} was just added and iptables-nft cannot read it: {reason}")

    # -- small parts ------------------------------------------------------------------

    def _stage_held(self) -> bool:
        stage = self.stages[self.index]
        return all((self.index, ci) in self.held_since for ci in range(len(stage.conditions)))

    def _stage_due(self) -> float | None:
        """When the current stage's window ends, if its conditions hold."""
        if self.index >= len(self.stages) or not self._stage_held():
            return None
        stage = self.stages[self.index]
        held = [self.held_since[(self.index, ci)] for ci in range(len(stage.conditions))]
        return max([self.window.last_change] + held) + self.config.stage_settle(stage)

    def _deadline(self) -> float:
        limits = [math.inf]
        if self.config.timeout:
            limits.append(self.started + self.config.timeout)
        if self.index < len(self.stages) and self.stages[self.index].timeout:
            limits.append(self.stage_started + self.stages[self.index].timeout)
        return min(limits)

    def _dump_due(self) -> float:
        return max(self.next_dump, self.last_event + DEBOUNCE)

    def _stage_intro(self) -> str:
        if self.index >= len(self.stages):
            return "compat"
        return f"stage {self.index + 1}/{len(self.stages)} {self.stages[self.index].name}"

    def _stage_name(self) -> str:
        if self.phase is Phase.GATING and self.index < len(self.stages):
            return self.stages[self.index].name
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
                                   baseline.genid if baseline else self.state.genid,
                                   baseline.digest if baseline else self.state.digest, level))

    def _log(self, level: str, message: str) -> None:
        self._out.append(A.Log(level, message))

    def _notify(self, **fields: object) -> None:
        self._out.append(A.Notify(tuple(fields.items())))

    def _exit(self, code: int, status: str) -> None:
        self.phase = Phase.DONE
        self.last_status = status
        self._out.append(A.Exit(code, status))

    def _publish(self, now: float, force: bool = False) -> None:
        """STATUS when it changed; the state file with every transition, and at least
        every HEARTBEAT seconds (status calls a state older than a few of them stale)."""
        status = self.status(now) if self.phase is not Phase.DONE else self.last_status
        journaled = any(isinstance(a, (A.Journal, A.Log, A.Exit)) for a in self._out)
        force = force or now >= self.next_heartbeat
        if status != self.last_status and self.phase is not Phase.DONE:
            self.last_status = status
            self._notify(STATUS=status)
        elif not (force or journaled or self.phase is Phase.DONE):
            return
        self.state.status = status
        self.state.stage = self.stages[self.index].name if \
            self.phase is Phase.GATING and self.index < len(self.stages) else None
        self.state.updated_at = self._wall(now)
        self.next_heartbeat = now + HEARTBEAT
        self._out.append(A.SaveState(replace(self.state)))  # rendered only if written
