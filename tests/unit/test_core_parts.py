"""The machine's parts, each alone: pure objects, the clock passed in."""
from __future__ import annotations

import math
from dataclasses import FrozenInstanceError, replace

import pytest

from fwgate import programmer as P
from fwgate.config import ChainExists, Config, LinkUp, Stage, TableExists
from fwgate.core.compat_runs import BUSY_WINDOWS, MAX_SETTLE_ROUNDS, CompatRuns, Run
from fwgate.core.confirm import Answer, Asking, GenerationConfirmer
from fwgate.core.heartbeat import NETBIRD_RECHECK, Heartbeat, NetbirdQuestion
from fwgate.core.pacer import DEBOUNCE, PACE, DumpPacer
from fwgate.core.phases import (
    TRANSITIONS, NoSuchTransition, Phase, Trigger, after, first_phase,
)
from fwgate.core.repairs import RepairQueue
from fwgate.core.retry import MOVED_RULESET, RetryPolicy
from fwgate.core.stages import StageTracker
from fwgate.core.window import QuietWindow
from fwgate.model import Expr, Facts, LinkState, Rule, Snapshot, Table, TableRef
from fwgate.netlink.exprs import split_expressions
from fwgate.netlink.nftables import Event
from fwgate.state import FrozenDict, State

NETBIRD = TableRef("ip", "netbird")
FILTER = TableRef("ip", "filter")


def netbird_oif_rule(handle: int, table: str = "filter") -> Rule:
    blob = b"".join(P.forward_oif_rule("wt0"))
    exprs = tuple(Expr(n, d) for n, d in split_expressions(blob))
    return Rule("ip", table, "FORWARD", handle, -1, exprs, P.TAG_FORWARD_OIF)


# --- the phase table ----------------------------------------------------------------------

def test_every_phase_but_done_can_stop_and_reach_done():
    for phase in Phase:
        if phase is not Phase.DONE:
            assert after(phase, Trigger.STOPPED) is Phase.DONE
    assert not [k for k in TRANSITIONS if k[0] is Phase.DONE], "DONE is final"


def test_every_trigger_is_used_and_every_phase_is_reached():
    assert {t for _, t in TRANSITIONS} == set(Trigger)
    reached = {first_phase(True), first_phase(False)}
    frontier = set(reached)
    while frontier:
        frontier = {TRANSITIONS[k] for k in TRANSITIONS if k[0] in frontier} - reached
        reached |= frontier
    assert reached == set(Phase)


def test_the_graph_is_the_documented_one():
    """The edges, as docs/architecture.md draws them: a change to the table is a change
    to the documented behaviour, on purpose."""
    edges = {(a.name, t.name, b.name) for (a, t), b in TRANSITIONS.items()}
    assert edges == {
        ("GATING", "STAGES_DONE", "CHECKING"), ("GATING", "TIMED_OUT", "CHECKING"),
        ("GATING", "CONDITION_LOST", "GATING"), ("CHECKING", "CONDITION_LOST", "GATING"),
        ("CHECKING", "RULES_MOVED", "GATING"), ("CHECKING", "READY_GUARDING", "GUARDING"),
        ("GATING", "EXIT", "DONE"), ("CHECKING", "EXIT", "DONE"),
        ("GATING", "STOPPED", "DONE"), ("CHECKING", "STOPPED", "DONE"),
        ("GUARDING", "STOPPED", "DONE"),
        ("GATING", "RELOADED_STAGES", "GATING"), ("CHECKING", "RELOADED_STAGES", "GATING"),
        ("GATING", "RELOADED_NO_STAGES", "CHECKING"),
        ("CHECKING", "RELOADED_NO_STAGES", "CHECKING"),
        ("GUARDING", "RELOADED_GUARDING", "GUARDING")}


def test_a_move_not_in_the_table_is_a_bug():
    with pytest.raises(NoSuchTransition, match="guarding on STAGES_DONE"):
        after(Phase.GUARDING, Trigger.STAGES_DONE)
    with pytest.raises(NoSuchTransition):
        after(Phase.DONE, Trigger.STOPPED)


# --- the dump pacer ---------------------------------------------------------------------------

def test_pacer_waits_for_a_pause_then_spaces_dumps_by_their_cost():
    pacer = DumpPacer(0.0)
    assert pacer.due() == 0.0 and pacer.start(0.0)        # the first snapshot at once
    assert pacer.due() == math.inf and not pacer.start(9.0)  # one at a time
    pacer.dumped(0.1, cost=0.1, current=True)
    assert not pacer.stale and pacer.due() == math.inf
    pacer.changed(0.15)
    assert pacer.rules_since == 0.15
    assert pacer.due() == pytest.approx(0.1 + PACE * 0.1)  # paced: later than the pause
    pacer.changed(0.29)
    assert pacer.due() == pytest.approx(0.29 + DEBOUNCE)   # the stream has not paused yet
    assert not pacer.start(0.30) and pacer.start(0.31)


def test_pacer_keeps_facts_stale_after_a_dump_older_than_the_events():
    pacer = DumpPacer(0.0)
    pacer.start(0.0)
    pacer.dumped(0.0, cost=0.0, current=False)
    assert pacer.stale and pacer.due() == 0.0
    pacer.failed()
    pacer.invalidate()
    before = pacer.rules_since
    assert pacer.stale and pacer.rules_since == before  # our own change: no new state


def test_pacer_ask_now_overrides_the_pace():
    pacer = DumpPacer(0.0)
    pacer.start(0.0)
    pacer.dumped(1.0, cost=1.0, current=True)
    pacer.ask_now(1.5)
    assert pacer.due() == 1.5


# --- the generation confirmer ----------------------------------------------------------------

def window_with_baseline(genid: int = 5, digest: str = "d") -> QuietWindow:
    window = QuietWindow(0.0)
    window.set_baseline(genid, digest)
    return window


def test_same_generation_is_quiet_without_a_dump():
    confirm, window = GenerationConfirmer(), window_with_baseline()
    confirm.ask_genid()
    assert confirm.asking is Asking.GENID and confirm.busy
    assert confirm.on_generation(5, window) is Answer.QUIET and not confirm.busy


def test_moved_generation_asks_the_digest():
    confirm, window = GenerationConfirmer(), window_with_baseline()
    confirm.ask_genid()
    assert confirm.on_generation(6, window) is Answer.NEED_DIGEST
    assert confirm.asking is Asking.DIGEST
    assert confirm.on_dump(6, "d", True, window) is Answer.QUIET
    assert window.baseline.genid == 6   # the baseline moves to the newer generation
    confirm.ask_genid()
    confirm.on_generation(7, window)
    assert confirm.on_dump(7, "other", True, window) is Answer.CHANGED
    assert window.baseline.digest == "d"  # the machine restarts the window from it


def test_an_answer_to_a_question_asked_before_a_change_is_stale():
    confirm, window = GenerationConfirmer(), window_with_baseline()
    confirm.ask_genid()
    confirm.changed()
    assert confirm.on_generation(5, window) is Answer.STALE and not confirm.busy
    confirm.ask_genid()
    confirm.on_generation(6, window)
    assert confirm.on_dump(6, "d", False, window) is Answer.STALE  # not current
    assert confirm.on_dump(6, "d", True, window) is Answer.IGNORED  # no question out


# --- the rule-stability probe (window, pacer, confirmer, transactions together) ----------

def test_scope_dumps_what_the_stages_read_and_digests_what_is_watched():
    from fwgate.core.stability import Scope
    stages = (Stage("rules", (ChainExists(FILTER, "FORWARD"),)),)
    config = Config(watch=(NETBIRD,), stages=stages)
    gate, guard = Scope.of(config, with_stages=True), Scope.of(config, with_stages=False)
    assert gate.interest == (NETBIRD, FILTER) and gate.keep_rules == ((FILTER, "FORWARD"),)
    assert gate.dump().digest_scope == (NETBIRD,) and gate.dump().scope == (NETBIRD, FILTER)
    assert guard.interest == (NETBIRD,) and guard.keep_rules == ()


def stability_probe():
    from fwgate.core.stability import Scope, StabilityProbe
    return StabilityProbe(Scope(frozenset({NETBIRD}), (NETBIRD, FILTER)), 0.0)


def test_probe_settles_on_the_baseline_taken_after_the_last_change():
    probe = stability_probe()
    assert probe.start_dump(0.0) is not None and probe.start_dump(0.0) is None  # one at a time
    assert probe.dumped(0.01, 5, "d", cost=0.01) is Answer.IGNORED
    assert probe.baseline.genid == 5 and probe.window_end(5.0) == 5.0
    probe.foreign_event(1.0, NETBIRD)                # a change to the watched scope ...
    assert probe.read_ends() and not probe.committed(6)   # ... counted once, when read
    probe.changed(1.0)
    assert probe.baseline is None and probe.last_change == 1.0
    assert probe.window_end(6.0) is None              # stale facts: the dump comes first
    assert probe.dump_due() == 1.0 + DEBOUNCE
    assert probe.start_dump(1.0 + DEBOUNCE) is not None
    probe.dumped(1.1, 6, "e", cost=0.01)
    assert not probe.ask_at_end(5.9, 6.0) and probe.ask_at_end(6.0, 6.0)
    assert probe.generation(6.0, 6) is Answer.QUIET   # nothing committed since


def test_probe_own_changes_keep_the_window_and_old_dumps_are_not_current():
    probe = stability_probe()
    probe.start_dump(0.0)
    probe.dumped(0.01, 5, "d", cost=0.01)
    probe.own_event(FILTER)                            # our repair, in a table of interest
    assert probe.baseline is None and probe.last_change == 0.0 and probe.dump_due() <= 0.03
    probe.committed(9)
    probe.start_dump(1.0)
    probe.dumped(1.0, 8, "d", cost=0.01)               # older than the NEWGEN read
    assert probe.baseline is None and probe.window_end(5.0) is None
    probe.foreign_event(2.0, FILTER)                   # interest, not watched: no change
    assert not probe.read_ends() and probe.rules_since == 2.0


def test_probe_moved_generation_asks_the_digest_and_settles_again_uncounted():
    probe = stability_probe()
    probe.start_dump(0.0)
    probe.dumped(0.0, 5, "d", cost=0.001)
    assert probe.ask_at_end(5.0, 5.0)
    assert probe.generation(5.0, 7) is Answer.NEED_DIGEST and probe.dump_due() == 5.0
    probe.start_dump(5.0)
    assert probe.dumped(5.0, 7, "x", cost=0.001) is Answer.CHANGED  # behind our back
    assert probe.last_change == 5.0 and probe.window.changes == 1
    probe.settle_again(6.0)
    assert probe.last_change == 6.0 and probe.window.changes == 1


def test_probe_reads_a_batch_counting_each_foreign_transaction_once():
    probe, own = stability_probe(), frozenset({77})
    events = [Event("NEWRULE", NETBIRD, portid=5), Event("NEWGEN", None, genid=6, portid=5),
              Event("NEWRULE", NETBIRD, portid=77), Event("NEWGEN", None, genid=7, portid=77),
              # ip filter is of interest here, not watched: its transaction is no change
              Event("NEWRULE", FILTER, portid=5), Event("NEWGEN", None, genid=8, portid=5),
              Event("NEWRULE", NETBIRD, portid=9)]                 # still open when read
    assert probe.read(3.0, events, own) == 2 and probe.window.changes == 2
    assert probe.last_seen_genid == 8 and probe.last_change == 3.0
    assert probe.read(4.0, [Event("NEWGEN", None, genid=9, portid=9)], own) == 0  # counted


# --- the repair queue ---------------------------------------------------------------------

def test_queue_waits_for_the_transactions_newgen():
    queue = RepairQueue()
    queue.add(netbird_oif_rule(10), "ct")
    assert queue.next_batch() is None          # NEWGEN not read yet
    queue.committed(42)
    repairs, genid = queue.next_batch()
    assert genid == 42 and [r.rule.handle for r in repairs] == [10]
    assert queue.next_batch() is None          # one batch in flight
    assert queue.done(repairs, 43, 43) is False and not queue.pending


def test_queue_forgets_rules_deleted_first():
    queue = RepairQueue()
    queue.add(netbird_oif_rule(10), "ct")
    queue.add(netbird_oif_rule(11, table="other"), "ct")
    queue.forget(Event("DELRULE", FILTER, rule=netbird_oif_rule(10)))
    assert [k[3] for k in queue.pending] == [11]
    queue.forget(Event("DELTABLE", TableRef("ip", "other")))
    assert not queue.pending


def test_queue_retries_on_the_newest_generation_then_gives_up():
    policy = RetryPolicy(retries=2)
    queue = RepairQueue(policy)
    queue.add(netbird_oif_rule(10), "ct")
    queue.committed(1)
    batches = []
    while (batch := queue.next_batch()) is not None:
        batches.append(batch[1])
        gave_up = queue.done(batch[0], None, 100 + len(batches))
    assert batches == [1, 101, 102] and len(batches) == policy.attempts
    assert gave_up and not queue.pending


def test_queue_gives_up_without_a_newer_generation():
    queue = RepairQueue()
    queue.add(netbird_oif_rule(10), "ct")
    queue.committed(1)
    repairs, _ = queue.next_batch()
    assert queue.done(repairs, None, None) is True


def fib_rule(handle: int) -> Rule:
    """A rule iptables-nft cannot read and fwgate knows no re-encoding of."""
    from fwgate.netlink import exprs as X
    data = X.build("fib", dreg=1, result=1, flags=4) + X.cmp(0, b"\0\0\0\0") + X.verdict(1)
    exprs = tuple(Expr(n, d) for n, d in split_expressions(data))
    return Rule("ip", "filter", "FORWARD", handle, 1, exprs)


def test_queue_judges_each_added_rule():
    queue = RepairQueue()
    assert queue.judge(netbird_oif_rule(10), repair=False) is not None   # blocks, left alone
    assert not queue.pending
    assert queue.judge(netbird_oif_rule(10), repair=True) is None        # queued instead
    assert list(queue.pending) == [("ip", "filter", "FORWARD", 10)]
    unreadable = queue.judge(fib_rule(11), repair=True)                  # no re-encoding known
    assert unreadable is not None and unreadable.rule.handle == 11 and "fib" in unreadable.reason
    assert len(queue.pending) == 1


def test_queue_reads_a_batch_judging_only_others_rules():
    queue, own = RepairQueue(), frozenset({77})
    events = [Event("NEWRULE", FILTER, portid=77, rule=netbird_oif_rule(9)),   # our own
              Event("NEWRULE", FILTER, portid=5, rule=netbird_oif_rule(10)),
              Event("NEWRULE", FILTER, portid=5, rule=fib_rule(11)),
              Event("NEWGEN", None, genid=42, portid=5)]
    said = queue.read(events, own, judge=True, repair=True)
    assert [f.rule.handle for f in said] == [11]               # no re-encoding: said at once
    assert list(queue.pending) == [("ip", "filter", "FORWARD", 10)] and queue.genid == 42
    assert queue.read([Event("DELRULE", FILTER, portid=5, rule=netbird_oif_rule(10))], own,
                      judge=True, repair=True) == [] and not queue.pending
    later = [*events[:3], Event("NEWGEN", None, genid=43, portid=5)]
    assert queue.read(later, own, judge=False, repair=True) == [] and not queue.pending
    assert queue.genid == 42                 # nothing waiting: a NEWGEN guards no batch
    queue.add(netbird_oif_rule(12), "ct")
    queue.read([Event("NEWGEN", None, genid=44, portid=5)], own, judge=False, repair=True)
    assert queue.genid == 44                 # judging off, the NEWGEN still counts


def test_a_crashed_unit_is_restarted_after_a_repair_at_most_once_per_interval():
    from fwgate.config import AfterReady
    from fwgate.core.repairs import RestartAfterRepair
    restarts, after = RestartAfterRepair(), AfterReady(restart_after_repair="k3s.service",
                                                       restart_interval=600.0)
    assert restarts.due(5.0, AfterReady()) is None                       # none configured
    assert restarts.due(5.0, after) == "k3s.service"
    assert restarts.due(6.0, after) == "k3s.service"   # not restarted (it had not crashed)
    restarts.restarted(6.0)
    assert restarts.due(600.0, after) is None and restarts.due(606.0, after) == "k3s.service"


# --- compat runs --------------------------------------------------------------------------

def test_one_run_at_a_time_a_sweep_waits_for_repairs():
    runs = CompatRuns(0.0)
    runs.want_sweep()
    assert not runs.start_sweep(repair_busy=True)
    assert runs.start_sweep(repair_busy=False) and runs.in_flight is Run.SWEEP
    assert not runs.start_verdict()
    assert runs.finished() is Run.SWEEP and runs.idle
    assert runs.start_verdict() and runs.in_flight is Run.VERDICT


def test_a_refused_run_stays_in_flight_while_it_runs_again():
    runs = CompatRuns(0.0, RetryPolicy(retries=1))
    runs.start_verdict()
    assert runs.answered(moved=True) == (Run.VERDICT, True) and not runs.idle
    assert runs.answered(moved=True) == (Run.VERDICT, False) and runs.idle
    runs.wait(3.0, 5.0)
    assert runs.check_due() == 8.0


def test_guard_checks_after_a_window_or_at_the_latest_busy_windows():
    runs = CompatRuns(0.0)
    assert runs.guard_due(0.0, 5.0) == math.inf  # nothing unchecked
    runs.unchecked(10.0)
    runs.unchecked(12.0)  # the oldest counts
    assert runs.guard_due(last_change=12.0, settle=5.0) == 17.0
    assert runs.guard_due(last_change=40.0, settle=5.0) == 10.0 + BUSY_WINDOWS * 5.0
    runs.failed(20.0, 5.0)
    assert runs.guard_due(last_change=12.0, settle=5.0) == 25.0  # not in a tight loop


def test_refused_runs_follow_the_one_policy():
    runs = CompatRuns(0.0, RetryPolicy(retries=2))
    assert [runs.refused_again(True) for _ in range(3)] == [True, True, False]
    assert runs.refused_again(True) is True  # counting starts over after giving up
    assert runs.refused_again(False) is False and runs.refused == 0
    assert [runs.settle_again() for _ in range(MAX_SETTLE_ROUNDS + 1)] == \
        [True] * MAX_SETTLE_ROUNDS + [False]
    runs.restart(50.0)
    assert runs.settle_again() and runs.check_due() == 50.0


def test_the_default_policy():
    assert MOVED_RULESET.attempts == MOVED_RULESET.retries + 1 >= 2
    assert MOVED_RULESET.again(MOVED_RULESET.retries)
    assert not MOVED_RULESET.again(MOVED_RULESET.retries + 1)


# --- the stage tracker ------------------------------------------------------------------

STAGES = (Stage("tunnel", (LinkUp("wt0"),)), Stage("rules", (TableExists(NETBIRD),)))


def facts(up: bool, table: bool) -> Facts:
    tables = {NETBIRD: Table("ip", "netbird")} if table else {}
    return Facts(links={"wt0": LinkState(up)}, snapshot=Snapshot(1, tables))


def test_stages_hold_since_and_go_back():
    tracker, config = StageTracker(STAGES, 0.0), Config(settle=5.0, stages=STAGES)
    assert tracker.observe(facts(False, True), 1.0, rules_since=0.5) is None
    assert not tracker.held() and tracker.waiting() == "waiting for wt0 to come up"
    tracker.observe(facts(True, True), 2.0, rules_since=0.5)
    assert tracker.held() and tracker.due(last_change=0.0, config=config) == 7.0
    assert [line.kind for line in tracker.walk(facts(True, True), 2.0)] == ["stage-held"]
    assert tracker.walk(facts(True, True), 3.0) == []       # said once per visit
    lines = tracker.complete(7.0, config)
    assert [(line.kind, line.stage, line.took) for line in lines] == \
        [("settled", "tunnel", 7.0), ("stage-start", "rules", None)]
    assert tracker.intro() == "stage 2/2 rules"
    assert tracker.due(0.0, config) == 0.5 + 5.0  # a rule condition: since the snapshot's state
    back = tracker.observe(facts(False, True), 8.0, 0.5)
    assert back == ("stage-start", "tunnel",
                    "back to stage 1/2 tunnel: a condition stopped holding "
                    "(waiting for wt0 to come up)", None)
    assert tracker.index == 0 and tracker.started == 8.0
    tracker.observe(facts(True, True), 9.0, 0.5)
    tracker.complete(14.0, config)
    assert [line.kind for line in tracker.complete(20.0, config)] == ["settled"]
    assert tracker.done and tracker.name is None and tracker.intro() == "compat"


def test_stages_that_do_not_apply_are_skipped():
    stages = (Stage("tunnel", (LinkUp("wt0"),), if_installed="netbird.service"),
              Stage("rules", (TableExists(NETBIRD),)))
    tracker, absent = StageTracker(stages, 0.0), Facts(units={"netbird.service": "not-found"})
    lines = tracker.walk(absent, 1.0)
    assert [(line.kind, line.stage) for line in lines] == \
        [("stage-skipped", "tunnel"), ("stage-start", "rules")]
    assert lines[0].text.startswith("stage 1/2 tunnel: skipped: ")
    assert tracker.walk(absent, 1.0) == []
    assert not tracker.done


def test_stage_deadlines():
    stages = (Stage("tunnel", (LinkUp("wt0"),), timeout=7.0),)
    tracker = StageTracker(stages, 3.0)
    assert tracker.deadline(0.0, Config(timeout=100.0, stages=stages)) == 10.0
    assert tracker.deadline(0.0, Config(timeout=5.0, stages=stages)) == 5.0
    tracker.complete(4.0, Config(stages=stages))   # the stage settled: none left to time out
    assert tracker.deadline(0.0, Config(timeout=0, stages=stages)) == math.inf


def test_chain_condition_if_exists():
    stages = (Stage("rules", (ChainExists(FILTER, "FORWARD", if_exists=True),)),)
    tracker = StageTracker(stages, 0.0)
    tracker.observe(Facts(snapshot=Snapshot(1, {})), 1.0, 0.0)
    assert tracker.held()


# --- the clocks ------------------------------------------------------------------------

def test_heartbeat():
    beat = Heartbeat(0.0, every=10.0)
    assert beat.due(True) == 10.0 and beat.due(False) == math.inf
    assert not beat.is_due(9.9) and beat.is_due(10.0)
    beat.beat(12.0)
    assert beat.due(True) == 22.0


def test_netbird_question_asked_once_rechecked_explained_once():
    q = NetbirdQuestion()
    assert q.take() and not q.take()
    q.explain()
    assert q.take()
    assert q.answered(1.0, recheck=True) is True and q.due() == 1.0 + NETBIRD_RECHECK
    q.explain()   # once per run
    assert not q.take() and q.answered(2.0, recheck=False) is False
    q.tick(1.0 + NETBIRD_RECHECK)
    assert q.take() and q.due() == math.inf


# --- the published State ------------------------------------------------------------------

def test_published_state_cannot_be_changed():
    state = State(1, None, stage_seconds={"tunnel": 1.0}, repairs=[{"at": 1.0, "rule": "r"}],
                  prevention={"in_force": True})
    with pytest.raises(FrozenInstanceError):
        state.phase = "ready"
    with pytest.raises(TypeError):
        state.stage_seconds["rules"] = 2.0
    with pytest.raises(TypeError):
        state.repairs[0]["rule"] = "other"
    with pytest.raises(AttributeError):
        state.repairs.append({})
    assert isinstance(state.prevention, FrozenDict) and isinstance(state.repairs, tuple)
    later = replace(state, repairs=state.kept("repairs", {"at": 2.0, "rule": "s"}))
    assert len(state.repairs) == 1 and len(later.repairs) == 2
    assert '"stage_seconds": {\n    "tunnel": 1.0' in later.to_json()


def test_published_state_keeps_the_latest_few():
    state = State(1, None)
    for i in range(State.MAX_KEPT + 5):
        state = replace(state, repairs=state.kept("repairs", {"rule": str(i)}))
    assert len(state.repairs) == State.MAX_KEPT and state.repairs[-1]["rule"] == "24"


# --- the transaction counter ------------------------------------------------------------

def test_a_transaction_counts_once_when_first_read():
    from fwgate.core.transactions import TransactionCounter
    txn = TransactionCounter()
    assert not txn.read_ends() and not txn.closed()   # untouched: never counted
    txn.touch()
    assert txn.read_ends() and not txn.read_ends()     # counted when read, NEWGEN later
    assert not txn.closed()                            # ... not again at its NEWGEN
    txn.touch()
    assert txn.closed()                                # read whole: counted at NEWGEN
    txn.touch()
    txn.forget()
    assert not txn.closed()


# --- the record ---------------------------------------------------------------------------

def test_record_counts_fold_into_the_published_state_only():
    from fwgate.core import actions as A
    from fwgate.core.record import Record
    from fwgate.core.window import Baseline
    record = Record(State(7, None), started=100.0, wall_offset=1000.0,
                    where=lambda: ("tunnel", Baseline(3, "abc")))
    record.changed(101.0)
    record.resyncs_total += 1
    assert record.state.changes_total == 0          # not yet published
    record.journal("stage-held", 101.5, "held")
    journal = record.out[-1]
    assert (journal.stage, journal.elapsed_ms, journal.genid, journal.digest) == \
        ("tunnel", 1500, 3, "abc")
    assert record.publish(102.0, "working", "tunnel", done=False, force=False)
    saved = record.out[-1]
    assert isinstance(saved, A.SaveState) and saved.state.changes_total == 1
    assert saved.state.resyncs_total == 1 and saved.state.last_change_at == 1101.0
    assert saved.state.updated_at == 1102.0 and saved.state.status == "working"
    record.out = []
    assert not record.publish(103.0, "working", "tunnel", done=False, force=False)
    assert record.out == []                          # nothing new: nothing published
    assert record.publish(104.0, "working", "tunnel", done=False, force=True)


def record_at(now: float = 100.0):
    from fwgate.core.record import Record
    return Record(State(7, None), started=now, wall_offset=1000.0, where=lambda: ("tunnel", None))


def said(record) -> list[tuple]:
    """What a Record asked the world to hear: (channel, ...) per action."""
    from fwgate.core import actions as A
    out = []
    for a in record.out:
        match a:
            case A.Log():
                out.append(("log", a.level, a.message))
            case A.Journal():
                out.append(("journal", a.kind, a.message))
            case A.Notify():
                out.append(("notify", dict(a.fields)))
    return out


def test_ready_status_says_why_it_is_degraded():
    from fwgate.compat.policy import Verdict
    from fwgate.core.record import ready_status
    clean, warned = Verdict(0), Verdict(0, warnings=("misread -m mark",))
    assert ready_status(False, clean, None, 7.04) == "ready: rules settled after 7.0s"
    assert ready_status(False, warned, "timed out in stage 1/2 tunnel", 30.0) == \
        "ready (degraded: timed out in stage 1/2 tunnel; 1 warning(s): misread -m mark)"
    assert ready_status(False, clean, "timed out in x", 30.0) == "ready (degraded: timed out in x)"
    assert ready_status(True, warned, None, 0.0) == \
        "ready: guarding; degraded: 1 warning(s): misread -m mark"


def test_readiness_decides_what_follows_the_verdict_before_ready():
    from fwgate.compat.policy import Verdict
    from fwgate.core.readiness import Readiness, Role, Then
    blocked, clean = Verdict(3, blocking=("ip filter FORWARD handle 4",)), Verdict(0)
    gate = Readiness(Role.GATE, keep_guarding=False, started=10.0)
    assert gate.after_verdict(blocked, 12.0) == (Then.INCOMPATIBLE, blocked.summary)
    assert not gate.sent and gate.stop_code("SIGINT") == 130 and gate.stop_code("SIGTERM") == 0
    gate.timed_out = "timed out in stage 1/2 tunnel"
    assert gate.checking_status().startswith("timed out in stage 1/2 tunnel; compat: ")
    assert gate.after_verdict(clean, 12.0) == (Then.EXIT, "ready (degraded: timed out in stage "
                                                    "1/2 tunnel)")
    assert gate.sent and gate.stop_code("SIGINT") == 0
    gate.restart()
    assert gate.after_verdict(clean, 17.5) == (Then.EXIT, "ready: rules settled after 7.5s")
    watching = Readiness(Role.GATE, keep_guarding=True, started=0.0)
    assert watching.after_verdict(clean, 1.0)[0] is Then.GUARD
    guard = Readiness(Role.GUARD, keep_guarding=False, started=0.0)
    assert guard.keep_guarding and not guard.gates
    assert guard.after_verdict(blocked, 1.0) == (Then.GUARD, f"ready: guarding; {blocked.summary}")


def test_record_journals_the_stage_lines_and_keeps_how_long_each_took():
    from fwgate.core.stages import Line
    record = record_at()  # where the machine is: "tunnel"; each Line names its own stage
    record.stages_moved(107.0, [Line("settled", "wt0", "stage 1/2 wt0: settled", 7.0),
                                Line("stage-start", "rules", "stage 2/2 rules")])
    assert [(a.kind, a.stage, a.message) for a in record.out] == [
        ("settled", "wt0", "stage 1/2 wt0: settled"),
        ("stage-start", "rules", "stage 2/2 rules")]
    assert record.state.stage_seconds == {"wt0": 7.0}


def test_status_lines_after_the_stages():
    from fwgate.compat.policy import Verdict
    from fwgate.core.record import checking_status, guarding_status
    assert checking_status(None) == "compat: checking that iptables-nft can read the settled rules"
    assert checking_status("timed out in stage 2/2 rules").startswith(
        "timed out in stage 2/2 rules; compat: checking")
    assert guarding_status(True, None, 0, None) == "guarding: not checked yet; 0 repair(s)"
    assert guarding_status(False, Verdict(0), 3, 2) == \
        "watching: iptables-nft reads every rule; 3 repair(s); rules: 2 change(s), settling"


def test_record_says_a_timeout_and_fails_only_when_told():
    proceeding, failing = record_at(), record_at()
    assert proceeding.timed_out(130.0, "stage 1/2 tunnel: waiting for wt0 to come up",
                                fail=False) == \
        "timed out in stage 1/2 tunnel: waiting for wt0 to come up"
    assert said(proceeding) == [("journal", "timeout",
                                 "timed out in stage 1/2 tunnel: waiting for wt0 to come up")]
    assert proceeding.state.phase == "waiting"
    failing.timed_out(130.0, "stage 1/2 tunnel", fail=True)
    assert said(failing)[-1] == ("notify", {"STATUS": "failed: timed out in stage 1/2 tunnel",
                                            "ERRNO": 110})
    assert failing.state.phase == "failed"


def test_record_says_stop_reload_and_a_rejected_config():
    record = record_at()
    record.stopping("SIGTERM", before_ready=True)
    assert said(record) == [("notify", {"STOPPING": 1, "STATUS": "stopping: no READY was sent"}),
                            ("log", "info", "SIGTERM: stopping before READY")]
    assert record.state.phase == "stopped"
    record = record_at()
    record.config_rejected("/etc/fwgate.yaml", "settle: expected a time span (line 1)")
    assert record.state.config_error == "settle: expected a time span (line 1)"
    record.reloaded("/etc/fwgate.yaml", after_ready=True)
    assert record.state.config_error is None
    assert said(record)[-1] == ("log", "info", "SIGHUP: reloaded /etc/fwgate.yaml; checking "
                                               "the rules again")
    record.reloaded("/etc/fwgate.yaml", after_ready=False)
    assert said(record)[-1][2].endswith("; starting the gate over")
    record.guarding([TableRef("ip6", "filter"), NETBIRD])
    assert said(record)[-1] == ("log", "info", "READY sent; guarding ip netbird, ip6 filter")
    assert record.state.phase == "guarding"


def test_stage_lines_for_the_journal():
    tracker, config = StageTracker(STAGES, 0.0), Config(settle=5.0, stages=STAGES)
    assert tracker.start_line().text == "stage 1/2 tunnel"
    tracker.observe(facts(True, True), 0.0, 0.0)
    assert tracker.walk(facts(True, True), 0.0)[0].text == \
        "stage 1/2 tunnel: conditions hold, settling"
    assert tracker.complete(5.0, config)[0].text == "stage 1/2 tunnel: settled, quiet for 5s"


def test_stage_status_speaks_to_a_person():
    tracker, config = StageTracker(STAGES, 0.0), Config(settle=5.0, stages=STAGES)
    window = QuietWindow(0.0)
    tracker.observe(facts(False, True), 0.0, 0.0)
    assert tracker.status(1.0, window, config) == "stage 1/2 tunnel: waiting for wt0 to come up"
    tracker.observe(facts(True, True), 1.0, 0.0)
    window.change(2.0)
    assert tracker.status(3.5, window, config) == \
        "stage 1/2 tunnel: rules: 1 change, quiet 1.5s of 5s"


# --- deferred modules ---------------------------------------------------------------------

def test_the_machine_starts_without_the_compat_reader_or_the_mark_model():
    """Named at the top of core/, loaded at first use: the first snapshot must not wait
    on them (bench/README.md, start-up)."""
    import json
    import subprocess
    import sys
    probe = ("import json, sys; import fwgate.daemon, fwgate.core.machine; "
             "print(json.dumps(sorted(m for m in sys.modules if m.startswith('fwgate'))))")
    at_start = set(json.loads(subprocess.run([sys.executable, "-c", probe], check=True,
                                             capture_output=True, text=True).stdout))
    loaded = ("import json, sys, types; import fwgate.core.machine; "
              "print(json.dumps(sorted(m for m, v in sys.modules.items() "
              "if m.startswith('fwgate') and type(v) is types.ModuleType)))")
    really = set(json.loads(subprocess.run([sys.executable, "-c", loaded], check=True,
                                           capture_output=True, text=True).stdout))
    assert "fwgate.core.machine" in at_start
    assert not {"fwgate.compat.reader", "fwgate.marks.conflicts"} & really


def test_a_deferred_module_works_as_imported():
    import subprocess
    import sys
    code = ("from fwgate.core.deferred import deferred, load; "
            "m = deferred('fwgate.marks'); import fwgate.marks; "
            "assert fwgate.marks is m and callable(m.harms); load(m); "
            "from fwgate.marks import conflict_text; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr
