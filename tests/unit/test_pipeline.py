"""The gate as a pure machine, driven the way the daemon drives it."""
import math

from hypothesis import given, settings, strategies as st

from fwgate.config import CompatConfig, Config, LinkUp, Stage, TableExists, TableRef
from fwgate.model import Snapshot, Table
from fwgate.pipeline import Facts, Failed, Gate, LinkState, NeedConfirm, Ready, RunCompat, Wait

NETBIRD = TableRef("ip", "netbird")
STAGES = (Stage("tunnel", (LinkUp("wt0"),)), Stage("rules", (TableExists(NETBIRD),)))


class World:
    """The kernel as the gate would see it: a genid, a digest, links, tables."""

    def __init__(self, config: Config):
        self.gate = Gate(config, 0.0)
        self.genid, self.version = 1, 0
        self.link_up, self.table = False, False
        self.last_change = 0.0
        self.ready_at = None
        self.outcome = None
        self.compat = lambda now: ([], 0)
        self.changed_at: list[float] = []
        self.table_handle = 0
        self.refresh(0.0)

    def facts(self) -> Facts:
        tables = {NETBIRD: Table("ip", "netbird")} if self.table else {}
        links = {"wt0": LinkState(self.link_up)}
        return Facts(links=links, snapshot=Snapshot(self.genid, tables))

    def digest(self) -> str:
        # A re-created table gets a new handle, as in the kernel.
        return f"v{self.version}-{self.table and self.table_handle}"

    def refresh(self, now: float) -> None:  # the daemon's dump after events
        if self.gate.window.baseline is None:
            self.gate.window.set_baseline(self.genid, self.digest())
        self.gate.observe(now, self.facts(), rules_since=self.last_change)

    def apply(self, now: float, what: str, notify: bool = True) -> None:
        if what in ("link_up", "link_down"):
            self.link_up = what == "link_up"
            self.gate.observe(now, self.facts())
            return
        before = self.digest()
        if what == "table_add":
            self.table_handle += 0 if self.table else 1
            self.table = True
        elif what == "table_del":
            self.table = False
        else:
            self.version += 1
        self.genid += 1
        if notify or self.digest() != before:
            self.changed_at.append(now)
        if notify:
            self.last_change = now
            self.gate.rules_changed(now)
            self.refresh(now)

    def step(self, now: float) -> float:
        """Run the gate at `now`; return when it next wants to run."""
        while True:
            decision = self.gate.decide(now)
            if isinstance(decision, NeedConfirm):
                baseline = self.gate.window.baseline
                same = baseline.genid == self.genid
                self.gate.confirm(now, self.genid, None if same else self.digest())
                if not same:
                    self.gate.observe(now, self.facts(), rules_since=self.last_change)
                continue
            if isinstance(decision, RunCompat):
                incompatible, repaired = self.compat(now)
                self.gate.compat_result(now, incompatible, repaired)
                self.refresh(now)
                continue
            if isinstance(decision, (Ready, Failed)):
                if self.outcome is None:
                    self.outcome, self.ready_at = decision, now
                return math.inf
            assert isinstance(decision, Wait)
            return decision.until

    def run(self, events: list[tuple[float, str, bool]], horizon: float = 1000.0) -> None:
        events = sorted(events)
        now, i = 0.0, 0
        while self.outcome is None:
            wake = self.step(now)
            if self.outcome is not None:
                return
            next_event = events[i][0] if i < len(events) else math.inf
            now = min(wake, next_event, horizon)
            if now == horizon:
                return
            while i < len(events) and events[i][0] <= now:
                _, what, notify = events[i]
                self.apply(now, what, notify)
                i += 1


def config(settle=5.0, timeout=0.0, on_timeout="proceed", stages=STAGES) -> Config:
    return Config(settle=settle, timeout=timeout, on_timeout=on_timeout, watch=(NETBIRD,), stages=stages)


def test_ready_comes_exactly_one_window_after_the_last_change():
    world = World(config())
    world.run([(1.0, "link_up", True), (2.0, "table_add", True), (3.0, "change", True),
               (4.5, "change", True)])
    assert isinstance(world.outcome, Ready) and world.outcome.degraded is None
    assert world.ready_at == 4.5 + 5.0


def test_stage_window_starts_when_its_conditions_hold():
    world = World(config())
    world.run([(0.5, "table_add", True), (20.0, "link_up", True)])
    assert world.ready_at == 25.0


def test_link_going_down_sends_the_gate_back():
    world = World(config())
    world.run([(0.0, "link_up", True), (1.0, "table_add", True), (4.0, "link_down", True),
               (8.0, "link_up", True)])
    assert world.ready_at == 13.0
    kinds = [e.kind for e in world.gate.take_events()]
    assert "stage-start" in kinds


def test_change_nobody_told_us_about_is_caught_by_the_digest():
    world = World(config())
    world.run([(0.0, "link_up", True), (0.0, "table_add", True), (3.0, "change", False)])
    # The unannounced change is found at the end of the first window (5.0) and
    # restarts it there.
    assert world.ready_at == 10.0


def test_timeout_fail_and_proceed():
    churn = [(0.0, "link_up", True), (0.0, "table_add", True)] + \
        [(t * 2.5, "change", True) for t in range(1, 100)]
    failing = World(config(timeout=30.0, on_timeout="fail"))
    failing.run(churn)
    assert isinstance(failing.outcome, Failed) and failing.outcome.exit_code == 1
    assert failing.ready_at == 30.0
    assert "rules: " in failing.outcome.reason
    proceeding = World(config(timeout=30.0, on_timeout="proceed"))
    proceeding.run(churn)
    assert isinstance(proceeding.outcome, Ready) and "timed out" in proceeding.outcome.degraded


def test_stage_timeout():
    stages = (Stage("tunnel", (LinkUp("wt0"),), timeout=7.0), STAGES[1])
    world = World(config(stages=stages, on_timeout="fail"))
    world.run([])
    assert isinstance(world.outcome, Failed) and world.ready_at == 7.0
    assert "waiting for wt0 to come up" in world.outcome.reason


def test_status_speaks_to_a_person():
    world = World(config())
    assert world.gate.status(0.0) == "stage 1/2 tunnel: waiting for wt0 to come up"
    world.apply(1.0, "link_up")
    world.apply(1.0, "table_add")
    world.step(1.0)
    world.apply(2.0, "change")
    world.apply(2.5, "change")
    assert world.gate.status(4.6) == "stage 1/2 tunnel: rules: 3 changes, quiet 2.1s of 5s"


def test_incompatible_rules_follow_the_policy():
    for policy, expected in (("fail", Failed), ("warn", Ready)):
        gate = Gate(Config(stages=(), compat=CompatConfig(policy)), 0.0)
        assert isinstance(gate.decide(0.0), RunCompat)
        gate.compat_result(0.0, ["ip filter FORWARD handle 4: ct expression"], 0)
        outcome = gate.decide(0.0)
        assert isinstance(outcome, expected)
        if policy == "fail":
            assert outcome.exit_code == 3


def test_repair_settles_again_before_ready():
    world = World(Config(settle=5.0, watch=(NETBIRD,), stages=STAGES,
                         compat=CompatConfig("repair")))
    compat_runs = []

    def repair_once(now):
        compat_runs.append(now)
        if len(compat_runs) == 1:
            world.apply(now, "change")  # the repair transaction is a change like any other
            return [], 1
        return [], 0

    world.compat = repair_once
    world.run([(0.0, "link_up", True), (0.0, "table_add", True)])
    assert compat_runs == [5.0, 10.0]
    assert world.ready_at == 10.0 and isinstance(world.outcome, Ready)


def test_repair_that_leaves_unreadable_rules_fails():
    world = World(Config(settle=1.0, watch=(NETBIRD,), stages=STAGES, compat=CompatConfig("repair")))
    world.compat = lambda now: (["ip filter FORWARD handle 9: fib expression"], 0)
    world.run([(0.0, "link_up", True), (0.0, "table_add", True)])
    assert isinstance(world.outcome, Failed) and world.outcome.exit_code == 3


events = st.lists(st.tuples(st.floats(0, 60, allow_nan=False).map(lambda x: round(x, 3)),
                            st.sampled_from(["change", "link_up", "link_down", "table_add",
                                             "table_del"]),
                            st.booleans()), max_size=40)


@settings(max_examples=300, deadline=None)
@given(events, st.floats(0, 10).map(lambda x: round(x, 2)))
def test_ready_never_before_settle_after_the_last_change(evs, settle):
    world = World(config(settle=settle))
    world.run(evs + [(61.0, "link_up", True), (61.0, "table_add", True)])
    assert isinstance(world.outcome, Ready)
    changes = [t for t in world.changed_at if t <= world.ready_at]
    assert world.ready_at >= max(changes, default=0.0) + settle - 1e-9
    # and the conditions hold when READY comes
    assert world.link_up and world.table
