"""The machine the daemon runs, driven here the way the daemon drives it, against a
small model of the kernel: every input it gets is what the executor would feed it."""
from __future__ import annotations

from dataclasses import replace

import math

from hypothesis import given, settings, strategies as st

from fwgate import programmer as P
from fwgate.compat.policy import ProbeResult
from fwgate.compat.reader import CompatReport, judge_rule
from fwgate.config import (
    AfterReady, ChainExists, CompatConfig, Config, LinkUp, Stage, TableExists,
)
from fwgate.core import actions as A
from fwgate.core import inputs as I
from fwgate.core.machine import Machine, Phase, Role
from fwgate.model import Chain, Expr, LinkState, Rule, Snapshot, Table, TableRef
from fwgate.netlink.exprs import split_expressions
from fwgate.netlink.nftables import Event

NETBIRD = TableRef("ip", "netbird")
FILTER = TableRef("ip", "filter")
OWN, NETBIRD_PORT = 77, 4242
STAGES = (Stage("tunnel", (LinkUp("wt0"),)), Stage("rules", (TableExists(NETBIRD),)))


def netbird_oif_rule(handle: int) -> Rule:
    blob = b"".join(P.forward_oif_rule("wt0"))
    exprs = tuple(Expr(n, d) for n, d in split_expressions(blob))
    return Rule("ip", "filter", "FORWARD", handle, -1, exprs, P.TAG_FORWARD_OIF)


class World:
    """The kernel and the executor around one Machine: a generation id, a digest,
    links and tables; actions are carried out at once, answers fed back."""

    def __init__(self, config: Config, role: Role = Role.GATE, keep_guarding: bool = False,
                 compat=None, units: dict[str, str] | None = None):
        self.config = config
        self.units = units or {}
        self.genid, self.version, self.table_handle = 1, 0, 0
        self.link_up, self.table = False, False
        self.filter_rules: dict[int, Rule] = {}
        self.next_handle = 10
        self.compat = compat or (lambda world: ProbeResult(CompatReport(), world.genid))
        self.changed_at: list[float] = []        # foreign changes, notified or not
        self.ready_at = self.exit = None
        self.actions: list = []
        self.repair_windows: list[float] = []   # exposure: rule added → replaced
        self.added_at: dict[int, float] = {}
        self.machine = Machine(config, 0.0, role, own_portids={OWN}, keep_guarding=keep_guarding,
                               facts=self.facts_now())
        self.feed(self.machine.start(0.0), 0.0)

    # the kernel
    def snapshot(self) -> Snapshot:
        tables = {}
        if self.table:
            tables[NETBIRD] = Table("ip", "netbird", handle=self.table_handle)
        if self.filter_rules:
            tables[FILTER] = Table("ip", "filter", chains=(Chain("FORWARD", 1, 2, 0),),
                                   rules=tuple(self.filter_rules.values()))
        return Snapshot(self.genid, tables)

    def digest(self) -> str:
        # A re-created table gets a new handle, as in the kernel.
        return f"v{self.version}-{self.table and self.table_handle}-{sorted(self.filter_rules)}"

    def facts_now(self):
        from fwgate.model import Facts
        return Facts(units=dict(self.units), links={"wt0": LinkState(self.link_up)},
                     snapshot=None)

    def commit(self, now: float, events: list[Event], notify: bool, portid: int,
               before: str | None = None) -> None:
        self.genid += 1
        # A foreign change: announced, or one that moved the state (a silent no-op is none).
        if portid != OWN and (notify or before != self.digest()):
            self.changed_at.append(now)
        if notify:
            stamped = [Event(e.kind, e.table, None, portid, None, e.rule) for e in events]
            self.feed_input(I.NftEvents(now, tuple(stamped + [Event("NEWGEN", None, self.genid,
                                                                   portid)])))

    def apply(self, now: float, what: str, notify: bool = True) -> None:
        if what in ("link_up", "link_down"):
            self.link_up = what == "link_up"
            self.feed_input(I.LinksChanged(now, {"wt0": LinkState(self.link_up)}))
            return
        before = self.digest()
        if what == "netbird_rule":
            rule = netbird_oif_rule(self.next_handle)
            self.next_handle += 1
            self.filter_rules[rule.handle] = rule
            self.added_at[rule.handle] = now
            self.version += 1
            self.commit(now, [Event("NEWRULE", FILTER, rule=rule)], notify, NETBIRD_PORT, before)
            return
        if what == "table_add":
            self.table_handle += 0 if self.table else 1
            self.table = True
        elif what == "table_del":
            self.table = False
        else:
            self.version += 1
        self.commit(now, [Event("NEWRULE", NETBIRD)], notify, NETBIRD_PORT, before)

    # the executor
    def feed_input(self, inp) -> None:
        self.feed(self.machine.handle(inp), inp.now)

    def feed(self, actions, now: float) -> None:
        queue = list(actions)
        while queue:
            action = queue.pop(0)
            self.actions.append(action)
            answer = self.execute(action, now)
            if answer is not None:
                queue += self.machine.handle(answer)

    def execute(self, action, now: float):
        if isinstance(action, A.Dump):
            return I.Dumped(now, self.snapshot(), self.digest(), 0.0)
        if isinstance(action, A.QueryGeneration):
            return I.Generation(now, self.genid)
        if isinstance(action, A.RunCompat):
            return I.CompatDone(now, self.compat(self))
        if isinstance(action, A.RepairRules):
            if action.genid != self.genid:
                return I.RepairDone(now, action.repairs, None)
            for repair in action.repairs:
                old = self.filter_rules.pop(repair.rule.handle)
                self.repair_windows.append(now - self.added_at[old.handle])
                new = Rule("ip", "filter", "FORWARD", self.next_handle, -1, (), old.userdata)
                self.next_handle += 1
                self.filter_rules[new.handle] = new
            self.version += 1
            self.commit(now, [Event("NEWRULE", FILTER), Event("DELRULE", FILTER)], True, OWN)
            return I.RepairDone(now, action.repairs, self.genid)
        if isinstance(action, A.Notify) and dict(action.fields).get("READY"):
            self.ready_at = now
        if isinstance(action, A.Exit):
            self.exit = action
        return None

    def run(self, events: list[tuple[float, str, bool]], horizon: float = 1000.0) -> None:
        events = sorted(events, key=lambda e: e[0])
        now, i, spins = 0.0, 0, 0
        while self.exit is None:
            wake = self.machine.next_wakeup()
            # A machine that keeps asking to be woken now, with nothing to do, would
            # busy-loop the daemon.
            spins = spins + 1 if wake <= now else 0
            assert spins < 100, f"no progress at {now}: {self.actions[-5:]}"
            next_event = events[i][0] if i < len(events) else math.inf
            now = min(wake, next_event, horizon)
            if now == horizon:
                return
            if wake <= next_event:
                self.feed_input(I.Tick(now))
            while i < len(events) and events[i][0] <= now and self.exit is None:
                _, what, notify = events[i]
                self.apply(now, what, notify)
                i += 1

    def journal(self) -> list[str]:
        return [a.kind for a in self.actions if isinstance(a, A.Journal)]


def config(settle=5.0, timeout=0.0, on_timeout="proceed", stages=STAGES, policy="fail",
           watch=(NETBIRD,)) -> Config:
    return Config(settle=settle, timeout=timeout, on_timeout=on_timeout, watch=watch,
                  stages=stages, compat=CompatConfig(policy))


# --- the boot gate ------------------------------------------------------------------

def test_ready_comes_exactly_one_window_after_the_last_change():
    world = World(config())
    world.run([(1.0, "link_up", True), (2.0, "table_add", True), (3.0, "change", True),
               (4.5, "change", True)])
    assert world.exit.code == 0 and world.ready_at == 4.5 + 5.0
    assert world.journal()[-1] == "ready"


def test_stage_window_starts_when_its_conditions_hold():
    world = World(config())
    world.run([(0.5, "table_add", True), (20.0, "link_up", True)])
    assert world.ready_at == 25.0


def test_link_going_down_sends_the_gate_back():
    world = World(config())
    world.run([(0.0, "link_up", True), (6.0, "link_down", True), (8.0, "table_add", True),
               (9.0, "link_up", True)])
    assert world.ready_at == 14.0  # stage 1 again from 9.0, the last change at 8.0
    assert any(isinstance(a, A.Journal) and a.message.startswith("back to stage 1/2")
               for a in world.actions)


def test_stages_of_a_unit_that_is_not_installed_are_skipped_at_once():
    stages = tuple(replace(s, if_installed="netbird.service") for s in STAGES)
    world = World(config(stages=stages), units={"netbird.service": "not-found"})
    world.run([])
    assert world.exit.code == 0 and world.ready_at == 0.0  # no window: nothing to wait for
    skipped = [a.message for a in world.actions
               if isinstance(a, A.Journal) and a.kind == "stage-skipped"]
    assert skipped == ["stage 1/2 tunnel: skipped: netbird.service is not installed: nothing "
                       "to wait for", "stage 2/2 rules: skipped: netbird.service is not "
                       "installed: nothing to wait for"]
    installed = World(config(stages=stages), units={"netbird.service": "inactive"})
    installed.run([(1.0, "link_up", True), (2.0, "table_add", True)])
    assert installed.ready_at == 7.0


def test_the_state_is_published_at_least_every_heartbeat():
    world = World(config(stages=()), Role.GUARD)
    world.run([], horizon=61.0)
    saved = [a for a in world.actions if isinstance(a, A.SaveState)]
    times = [a.state.updated_at for a in saved]
    assert max(b - a for a, b in zip(times, times[1:])) <= 10.0 and times[-1] >= 50.0
    assert saved[-1].state.heartbeat_every == 10.0


def test_change_nobody_told_us_about_is_caught_by_the_digest():
    world = World(config())
    world.run([(0.0, "link_up", True), (0.0, "table_add", True), (3.0, "change", False)])
    # Found at the end of the first window (5.0), which restarts there.
    assert world.ready_at == 10.0


def test_timeout_fail_and_proceed():
    churn = [(0.0, "link_up", True), (0.0, "table_add", True)] + \
        [(t * 2.5, "change", True) for t in range(1, 100)]
    failing = World(config(timeout=30.0, on_timeout="fail"))
    failing.run(churn)
    assert failing.exit.code == 1 and failing.ready_at is None
    assert "rules: " in failing.exit.status
    assert ("ERRNO", 110) in [f for a in failing.actions if isinstance(a, A.Notify)
                              for f in a.fields]
    proceeding = World(config(timeout=30.0, on_timeout="proceed"))
    proceeding.run(churn)
    assert proceeding.ready_at == 30.0 and "timed out" in proceeding.exit.status


def test_stage_timeout():
    stages = (Stage("tunnel", (LinkUp("wt0"),), timeout=7.0), STAGES[1])
    world = World(config(stages=stages, on_timeout="fail"))
    world.run([])
    assert world.exit.code == 1 and "waiting for wt0 to come up" in world.exit.status


def test_status_speaks_to_a_person():
    world = World(config())
    assert world.machine.status(0.0) == "stage 1/2 tunnel: waiting for wt0 to come up"
    world.apply(1.0, "link_up")
    world.apply(1.0, "table_add")
    world.apply(2.0, "change")
    world.apply(2.5, "change")
    assert world.machine.status(4.6) == "stage 1/2 tunnel: rules: 3 changes, quiet 2.1s of 5s"


def unreadable(world: World) -> ProbeResult:
    """A compat probe that finds Netbird's rule (repairable) and a fib rule (not)."""
    from fwgate.netlink import exprs as X
    fib = Rule("ip", "filter", "FORWARD", 99, 1, tuple(Expr(n, d) for n, d in split_expressions(
        X.build("fib", dreg=1, result=1, flags=4) + X.cmp(0, b"\0\0\0\0") + X.verdict(1))))
    findings = tuple(f for f in (judge_rule(netbird_oif_rule(9))[0], judge_rule(fib)[0]))
    return ProbeResult(CompatReport((FILTER,), findings), world.genid)


def test_one_policy_for_check_and_run():
    """`check` judges a probe result read-only, `run` after its repair: same answer."""
    from fwgate.compat.policy import judge
    for policy, code in (("fail", 3), ("repair", 3), ("warn", 0)):
        world = World(config(stages=(), policy=policy), compat=unreadable)
        world.run([])
        assert world.exit.code == code, policy
        assert judge(unreadable(world), policy).exit_code == code, policy
    only_repairable = lambda w: ProbeResult(CompatReport((FILTER,), unreadable(w).report.findings[:1]), w.genid)
    world = World(config(stages=(), policy="repair"), compat=only_repairable)
    world.run([])
    assert world.exit.code == 0
    from fwgate.compat.policy import judge
    assert judge(only_repairable(world), "repair").exit_code == 0


def test_one_policy_blocks_only_what_kills_k3s():
    """A rule only kube-proxy and flannel trip over (nat), and a misread one: `check`
    and `run` both let k3s start (exit 0), degraded, under every policy."""
    from fwgate.compat.policy import judge
    from fwgate.compat.reader import analyse
    from fwgate.netlink import exprs as X

    def nat_and_misread(world: World) -> ProbeResult:
        def rule(table, chain, handle, blob):
            return Rule("ip", table, chain, handle, 0,
                        tuple(Expr(n, d) for n, d in split_expressions(blob)))
        fib = X.build("fib", dreg=1, result=1, flags=4) + X.cmp(0, b"\0\0\0\0") + X.verdict(1)
        lookup = X.payload_load(1, 12, 4) + X.lookup("allowed") + X.verdict(1)
        rules = (rule("nat", "POSTROUTING", 5, fib), rule("filter", "FORWARD", 6, lookup))
        tables = {}
        for r in rules:
            ref = TableRef(r.family, r.table)
            tables[ref] = Table(r.family, r.table, rules=tables.get(ref, Table("ip", r.table)).rules + (r,))
        return ProbeResult(analyse(Snapshot(world.genid, tables, tuple(tables))), world.genid)

    for policy in ("fail", "repair", "warn"):
        world = World(config(stages=(), policy=policy), compat=nat_and_misread)
        world.run([])
        verdict = judge(nat_and_misread(world), policy)
        assert world.exit.code == verdict.exit_code == 0, policy
        assert verdict.degraded and not verdict.blocking, policy


# --- repair at once ---------------------------------------------------------------

def test_a_repairable_rule_is_replaced_as_soon_as_its_event_is_read():
    world = World(config(policy="repair", watch=(NETBIRD, FILTER)))
    world.run([(0.0, "link_up", True), (0.0, "table_add", True), (3.0, "netbird_rule", True)])
    assert world.repair_windows == [0.0]
    assert [type(a).__name__ for a in world.actions].count("RepairRules") == 1
    # Our own repair never restarts the window: READY one window after Netbird's change.
    assert world.ready_at == 3.0 + 5.0
    assert "repaired" in world.journal()


def test_a_refused_repair_is_tried_again_on_the_newer_generation_then_swept():
    world = World(config(policy="repair", watch=(NETBIRD, FILTER)))
    world.run([(0.0, "link_up", True), (0.0, "table_add", True)], horizon=1.0)
    rule = netbird_oif_rule(50)
    world.filter_rules[50] = rule
    world.added_at[50] = 1.0
    world.genid += 1  # Netbird's transaction ...
    events = (Event("NEWRULE", FILTER, portid=NETBIRD_PORT, rule=rule),
              Event("NEWGEN", None, world.genid, NETBIRD_PORT))
    world.genid += 1  # ... and another one we have not read yet
    before = len(world.actions)
    world.feed_input(I.NftEvents(1.0, events))
    # Refused (the World's genid moved on, and no event tells the machine of it): tried
    # again on the newest generation it knows, a few times, then a full sweep.
    kinds = [type(a).__name__ for a in world.actions[before:]]
    from fwgate.core.retry import MOVED_RULESET
    assert kinds.count("RepairRules") == MOVED_RULESET.attempts and kinds.count("RunCompat") == 1
    assert world.actions[before + kinds.index("RunCompat")].repair is True


def test_lost_events_restart_the_window_and_sweep():
    world = World(config(policy="repair"))
    world.run([(0.0, "link_up", True), (0.0, "table_add", True)], horizon=2.0)
    world.feed_input(I.EventsLost(2.0))
    assert world.machine.state.resyncs_total == 1
    assert any(isinstance(a, A.RunCompat) for a in world.actions)
    world.run([])
    assert world.ready_at == 7.0


# --- after READY ------------------------------------------------------------------

def test_the_guard_is_ready_at_once_and_checks_again_after_each_change():
    world = World(config(stages=(), policy="repair", watch=(NETBIRD, FILTER)), Role.GUARD)
    assert world.ready_at == 0.0 and world.machine.phase is Phase.GUARDING
    world.run([(10.0, "change", True), (12.0, "netbird_rule", True), (30.0, "change", True)],
              horizon=100.0)
    assert world.exit is None  # a guard never ends by itself
    runs = [a for a in world.actions if isinstance(a, A.RunCompat)]
    assert len(runs) == 3  # at start, after 12+5, after 30+5
    assert world.repair_windows == [0.0]


def test_the_guard_checks_a_scope_that_is_never_quiet():
    """kube-router restores ip filter at every sync: on a busy node the guard's window
    never closes, yet it checks at the latest BUSY_WINDOWS windows after a change."""
    from fwgate.core.machine import BUSY_WINDOWS
    world = World(config(stages=(), policy="repair"), Role.GUARD)
    world.run([(10.0 + t, "change", True) for t in range(60)], horizon=70.0)
    runs = [a for a in world.actions if isinstance(a, A.RunCompat)]
    assert len(runs) >= 1 + 60 // (BUSY_WINDOWS * 5) - 1
    assert world.machine.status(70.0).startswith("guarding: ")


def test_watch_mode_keeps_guarding_and_stop_exits_zero():
    world = World(config(), keep_guarding=True)
    world.run([(0.0, "link_up", True), (0.0, "table_add", True)], horizon=50.0)
    assert world.ready_at == 5.0 and world.exit is None
    world.feed_input(I.Stop(51.0, "SIGTERM"))
    assert world.exit.code == 0


def test_stop_before_ready():
    world = World(config())
    world.feed_input(I.Stop(1.0, "SIGINT"))
    assert world.exit.code == 130 and world.ready_at is None
    assert ("STOPPING", 1) in [f for a in world.actions if isinstance(a, A.Notify) for f in a.fields]


def test_reload_starts_the_gate_over_with_the_new_config():
    world = World(config())
    world.run([(0.0, "link_up", True), (0.0, "table_add", True)], horizon=2.0)
    world.feed_input(I.Reload(2.0, config(settle=1.0, stages=STAGES[1:])))
    world.run([])
    assert world.ready_at == 3.0


def test_a_restart_after_a_live_repair_is_rate_limited():
    cfg = Config(settle=1.0, watch=(NETBIRD, FILTER), stages=(), compat=CompatConfig("repair"),
                 after_ready=AfterReady("watch", "k3s.service", 60.0))
    world = World(cfg, Role.GUARD)
    world.run([(1.0, "netbird_rule", True), (2.0, "netbird_rule", True)], horizon=10.0)
    restarts = [a for a in world.actions if isinstance(a, A.RestartUnit)]
    assert len(restarts) == 2  # no answer came back, so nothing was restarted yet
    world.feed_input(I.UnitRestarted(10.0, "k3s.service", "failed"))
    world.run([(11.0, "netbird_rule", True)], horizon=20.0)
    assert len([a for a in world.actions if isinstance(a, A.RestartUnit)]) == 2


# --- conditions -------------------------------------------------------------------

def test_if_exists_holds_on_a_plain_node_and_waits_for_the_rule_otherwise():
    wanted = Stage("rules", (ChainExists(FILTER, "FORWARD", iifname="wt0", if_exists=True),))
    plain = World(config(stages=(wanted,), watch=(NETBIRD, FILTER)))
    plain.run([])
    assert plain.ready_at == 5.0  # no ip filter at all: nothing to wait for
    strict = World(config(stages=(Stage("rules", (ChainExists(FILTER, "FORWARD",
                                                              iifname="wt0"),)),),
                          watch=(NETBIRD, FILTER)))
    strict.run([], horizon=100.0)
    assert strict.ready_at is None


# --- the property -----------------------------------------------------------------

events = st.lists(st.tuples(st.floats(0, 60, allow_nan=False).map(lambda x: round(x, 3)),
                            st.sampled_from(["change", "link_up", "link_down", "table_add",
                                             "table_del", "netbird_rule"]),
                            st.booleans()), max_size=40)


@settings(max_examples=300, deadline=None)
@given(events, st.floats(0, 10).map(lambda x: round(x, 2)), st.sampled_from(["repair", "warn"]))
def test_ready_never_before_settle_after_the_last_foreign_change(evs, settle, policy):
    """Changes come with their events, but for those made before fwgate subscribed (at
    0.0 here); a change the kernel never announced at all, later, is found by the digest
    at the window's end (test_change_nobody_told_us_about_is_caught_by_the_digest)."""
    evs = [(t, what, notify if t == 0.0 else True) for t, what, notify in evs]
    world = World(config(settle=settle, policy=policy, watch=(NETBIRD, FILTER)))
    world.run(evs + [(61.0, "link_up", True), (61.0, "table_add", True)])
    assert world.exit is not None and world.ready_at is not None
    changes = [t for t in world.changed_at if t <= world.ready_at]
    assert world.ready_at >= max(changes, default=0.0) + settle - 1e-9
    # the conditions hold when READY comes, and every repair was at once
    assert world.link_up and world.table
    assert all(w == 0.0 for w in world.repair_windows)
