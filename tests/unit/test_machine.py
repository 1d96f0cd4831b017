"""The machine as the daemon runs it: the real executor (fwgate.daemon.Daemon) over an
in-memory node (fwgate_testing.fake_node): every input the machine gets is what the
executor feeds it, its actions carried out in the executor's order, the compat probe
after READY on the real worker thread."""
from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings, strategies as st

from fwgate.compat.policy import ProbeResult
from fwgate.compat.reader import CompatReport, judge_rule
from fwgate.config import (
    AfterReady, ChainExists, CompatConfig, Config, LinkUp, Stage, TableExists,
)
from fwgate.core import actions as A
from fwgate.core.machine import Phase, Role
from fwgate.model import Expr, Rule, Snapshot, Table, TableRef
from fwgate.netlink.exprs import split_expressions
from fwgate_testing.fake_node import FILTER, NETBIRD, FakeNode, netbird_oif_rule

STAGES = (Stage("tunnel", (LinkUp("wt0"),)), Stage("rules", (TableExists(NETBIRD),)))


def config(settle=5.0, timeout=0.0, on_timeout="proceed", stages=STAGES, policy="fail",
           watch=(NETBIRD,)) -> Config:
    return Config(settle=settle, timeout=timeout, on_timeout=on_timeout, watch=watch,
                  stages=stages, compat=CompatConfig(policy))


# --- the boot gate ------------------------------------------------------------------

def test_ready_comes_exactly_one_window_after_the_last_change():
    node = FakeNode(config())
    node.run([(1.0, "link_up"), (2.0, "table_add"), (3.0, "change"), (4.5, "change")])
    assert node.exit.exit_code == 0 and node.ready_at == 4.5 + 5.0
    assert node.journal()[-1] == "ready"


def test_stage_window_starts_when_its_conditions_hold():
    node = FakeNode(config())
    node.run([(0.5, "table_add"), (20.0, "link_up")])
    assert node.ready_at == 25.0


def test_link_going_down_sends_the_gate_back():
    node = FakeNode(config())
    node.run([(0.0, "link_up"), (6.0, "link_down"), (8.0, "table_add"), (9.0, "link_up")])
    assert node.ready_at == 14.0  # stage 1 again from 9.0, the last change at 8.0
    assert any(isinstance(a, A.Journal) and a.message.startswith("back to stage 1/2")
               for a in node.actions)


def test_stages_of_a_unit_that_is_not_installed_are_skipped_at_once():
    stages = tuple(replace(s, if_installed="netbird.service") for s in STAGES)
    node = FakeNode(config(stages=stages), units={"netbird.service": "not-found"})
    node.run([])
    assert node.exit.exit_code == 0 and node.ready_at == 0.0  # no window: nothing to wait for
    skipped = [a.message for a in node.actions
               if isinstance(a, A.Journal) and a.kind == "stage-skipped"]
    assert skipped == ["stage 1/2 tunnel: skipped: netbird.service is not installed: nothing "
                       "to wait for", "stage 2/2 rules: skipped: netbird.service is not "
                       "installed: nothing to wait for"]
    installed = FakeNode(config(stages=stages), units={"netbird.service": "inactive"})
    installed.run([(1.0, "link_up"), (2.0, "table_add")])
    assert installed.ready_at == 7.0


def test_the_state_is_published_at_least_every_heartbeat():
    node = FakeNode(config(stages=()), Role.GUARD)
    node.run([], horizon=61.0)
    saved = [a for a in node.actions if isinstance(a, A.SaveState)]
    times = [a.state.updated_at for a in saved]
    assert max(b - a for a, b in zip(times, times[1:])) <= 10.0 and times[-1] >= 50.0
    assert saved[-1].state.heartbeat_every == 10.0


def test_change_nobody_told_us_about_is_caught_by_the_digest():
    node = FakeNode(config())
    node.run([(0.0, "link_up"), (0.0, "table_add"), (3.0, "change", False)])
    # Found at the end of the first window (5.0), which restarts there.
    assert node.ready_at == 10.0


def test_timeout_fail_and_proceed():
    churn = [(0.0, "link_up"), (0.0, "table_add")] + [(t * 2.5, "change") for t in range(1, 100)]
    failing = FakeNode(config(timeout=30.0, on_timeout="fail"))
    failing.run(churn)
    assert failing.exit.exit_code == 1 and failing.ready_at is None
    assert "rules: " in failing.exit.status
    assert ("ERRNO", 110) in [f for a in failing.actions if isinstance(a, A.Notify)
                              for f in a.fields]
    proceeding = FakeNode(config(timeout=30.0, on_timeout="proceed"))
    proceeding.run(churn)
    assert proceeding.ready_at == 30.0 and "timed out" in proceeding.exit.status


def test_stage_timeout():
    stages = (Stage("tunnel", (LinkUp("wt0"),), timeout=7.0), STAGES[1])
    node = FakeNode(config(stages=stages, on_timeout="fail"))
    node.run([])
    assert node.exit.exit_code == 1 and "waiting for wt0 to come up" in node.exit.status


def test_status_speaks_to_a_person():
    node = FakeNode(config())
    node.run([], horizon=0.0)
    assert node.machine.status(0.0) == "stage 1/2 tunnel: waiting for wt0 to come up"
    node = FakeNode(config())
    node.run([(1.0, "link_up"), (1.0, "table_add"), (2.0, "change"), (2.5, "change")],
             horizon=4.6)
    assert node.machine.status(4.6) == "stage 1/2 tunnel: rules: 3 changes, quiet 2.1s of 5s"


def unreadable(node) -> ProbeResult:
    """A compat probe that finds Netbird's rule (repairable) and a fib rule (not)."""
    from fwgate.netlink import exprs as X
    fib = Rule("ip", "filter", "FORWARD", 99, 1, tuple(Expr(n, d) for n, d in split_expressions(
        X.build("fib", dreg=1, result=1, flags=4) + X.cmp(0, b"\0\0\0\0") + X.verdict(1))))
    findings = tuple(f for f in (judge_rule(netbird_oif_rule(9))[0], judge_rule(fib)[0]))
    return ProbeResult(CompatReport((FILTER,), findings), node.generation)


def test_one_policy_for_check_and_run():
    """`check` judges a probe result read-only, `run` after its repair: same answer."""
    from fwgate.compat.policy import judge
    for policy, code in (("fail", 3), ("repair", 3), ("warn", 0)):
        node = FakeNode(config(stages=(), policy=policy), compat=unreadable)
        node.run([])
        assert node.exit.exit_code == code, policy
        # before READY the gate waits on the probe: it runs in the loop, not the worker
        assert [thread for _, thread in node.kernel.probes] == ["MainThread"], policy
        assert judge(unreadable(node.kernel), policy).exit_code == code, policy
    only_repairable = lambda k: ProbeResult(CompatReport((FILTER,), unreadable(k).report.findings[:1]), k.generation)
    node = FakeNode(config(stages=(), policy="repair"), compat=only_repairable)
    node.run([])
    assert node.exit.exit_code == 0
    assert judge(only_repairable(node.kernel), "repair").exit_code == 0


def test_one_policy_blocks_only_what_kills_k3s():
    """A rule only kube-proxy and flannel trip over (nat), and a misread one: `check`
    and `run` both let k3s start (exit 0), degraded, under every policy."""
    from fwgate.compat.policy import judge
    from fwgate.compat.reader import analyse
    from fwgate.netlink import exprs as X

    def nat_and_misread(kernel) -> ProbeResult:
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
        return ProbeResult(analyse(Snapshot(kernel.generation, tables, tuple(tables))),
                           kernel.generation)

    for policy in ("fail", "repair", "warn"):
        node = FakeNode(config(stages=(), policy=policy), compat=nat_and_misread)
        node.run([])
        verdict = judge(nat_and_misread(node.kernel), policy)
        assert node.exit.exit_code == verdict.exit_code == 0, policy
        assert verdict.degraded and not verdict.blocking, policy


# --- repair at once ---------------------------------------------------------------

def test_a_repairable_rule_is_replaced_as_soon_as_its_event_is_read():
    node = FakeNode(config(policy="repair", watch=(NETBIRD, FILTER)))
    node.run([(0.0, "link_up"), (0.0, "table_add"), (3.0, "netbird_rule")])
    assert node.repair_windows == [0.0]
    assert node.kinds().count("RepairRules") == 1
    # Our own repair never restarts the window: READY one window after Netbird's change.
    assert node.ready_at == 3.0 + 5.0
    assert "repaired" in node.journal()


def test_a_refused_repair_is_tried_again_on_the_newer_generation_then_swept():
    """Netbird's rule comes with its event; another transaction lands before the repair
    and is never announced: the batch is refused (the generation moved on, and no event
    tells the machine of it), tried again on the newest generation it knows, a few times,
    then a full sweep."""
    from fwgate.core.retry import MOVED_RULESET
    node = FakeNode(config(policy="repair", watch=(NETBIRD, FILTER)))
    node.run([(0.0, "link_up"), (0.0, "table_add"), (1.0, "netbird_rule"),
              (1.0, "change", False)], horizon=1.5)
    kinds = node.kinds(node.actions_from(1.0))
    assert kinds.count("RepairRules") == MOVED_RULESET.attempts and kinds.count("RunCompat") == 1
    assert node.actions_from(1.0)[kinds.index("RunCompat")].repair is True
    assert node.repair_windows == []  # every batch refused; the sweep found nothing (no findings)


def test_lost_events_restart_the_window_and_sweep():
    node = FakeNode(config(policy="repair"))
    node.run([(0.0, "link_up"), (0.0, "table_add"), (2.0, "events_lost")])
    assert node.machine.state.resyncs_total == 1
    assert any(isinstance(a, A.RunCompat) for a in node.actions_from(2.0))
    assert node.ready_at == 7.0


# --- after READY ------------------------------------------------------------------

def test_the_guard_is_ready_at_once_and_checks_again_after_each_change():
    node = FakeNode(config(stages=(), policy="repair", watch=(NETBIRD, FILTER)), Role.GUARD)
    node.run([(10.0, "change"), (12.0, "netbird_rule"), (30.0, "change")], horizon=100.0)
    assert node.ready_at == 0.0 and node.machine.phase is Phase.GUARDING
    assert node.exit is None  # a guard never ends by itself
    runs = [a for a in node.actions if isinstance(a, A.RunCompat)]
    assert len(runs) == 3  # at start, after 12+5, after 30+5
    # the first check comes before the guard's READY, in the loop; after READY each runs
    # on the worker thread, the loop reading events meanwhile
    assert node.kernel.probes == [(True, "MainThread")] + [(True, "fwgate-worker")] * 2
    assert [r.background for r in runs] == [False, True, True]  # the machine says which
    assert node.repair_windows == [0.0]
    # The executor stamps the last foreign change to the scope the machine names.
    assert [a.tables for a in node.actions if isinstance(a, A.Watching)] == [{NETBIRD, FILTER}]
    assert node.daemon.last_change == 30.0


def test_the_guard_checks_a_scope_that_is_never_quiet():
    """kube-router restores ip filter at every sync: on a busy node the guard's window
    never closes, yet it checks at the latest BUSY_WINDOWS windows after a change."""
    from fwgate.core.compat_runs import BUSY_WINDOWS
    node = FakeNode(config(stages=(), policy="repair"), Role.GUARD)
    node.run([(10.0 + t, "change") for t in range(60)], horizon=70.0)
    runs = [a for a in node.actions if isinstance(a, A.RunCompat)]
    assert len(runs) >= 1 + 60 // (BUSY_WINDOWS * 5) - 1
    assert node.machine.status(70.0).startswith("guarding: ")


def test_systemd_hears_keep_alive_until_ready_and_not_after(tmp_path, monkeypatch):
    """EXTEND_TIMEOUT_USEC while the gate works; after READY it would stretch a runtime
    limit instead: only the watchdog's pings. Heard on a real notify socket."""
    import socket
    import threading
    from fwgate.adapters.notify import Notifier
    path, heard = str(tmp_path / "notify"), []
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(path)
        # read as systemd does, at once: a full queue (10 datagrams) would block the sender
        listener = threading.Thread(target=lambda: heard.extend(
            iter(lambda: systemd.recv(65536).decode(), "STATUS=end")), daemon=True)
        listener.start()
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        monkeypatch.setenv("WATCHDOG_USEC", "4000000")   # pings go on after READY
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        node = FakeNode(config(), keep_guarding=True, notifier=Notifier())
        node.run([(0.0, "link_up"), (0.0, "table_add")], horizon=20.0)
        node.notifier.send(STATUS="end")   # the last: the listener has read them all
        node.notifier.close()
        listener.join(10)
    ready = next(i for i, m in enumerate(heard) if m.startswith("READY=1"))
    assert any("EXTEND_TIMEOUT_USEC=8000000" in m for m in heard[:ready])
    after = heard[ready + 1:]
    assert "WATCHDOG=1" in after and not any("EXTEND_TIMEOUT_USEC" in m for m in after)


def test_watch_mode_keeps_guarding_and_stop_exits_zero():
    node = FakeNode(config(), keep_guarding=True)
    node.run([(0.0, "link_up"), (0.0, "table_add")], horizon=50.0)
    assert node.ready_at == 5.0 and node.exit is None
    stopped = FakeNode(config(), keep_guarding=True)
    stopped.run([(0.0, "link_up"), (0.0, "table_add"), (51.0, "stop")])
    assert stopped.ready_at == 5.0 and stopped.exit.exit_code == 0


def test_stop_before_ready():
    node = FakeNode(config())
    node.run([(1.0, "interrupt")])
    assert node.exit.exit_code == 130 and node.ready_at is None
    assert ("STOPPING", 1) in [f for a in node.actions if isinstance(a, A.Notify) for f in a.fields]


def test_reload_starts_the_gate_over_with_the_new_config():
    node = FakeNode(config())
    node.run([(0.0, "link_up"), (0.0, "table_add"),
              (2.0, "reload", config(settle=1.0, stages=STAGES[1:]))])
    assert node.ready_at == 3.0


def test_a_restart_after_a_live_repair_is_rate_limited():
    cfg = Config(settle=1.0, watch=(NETBIRD, FILTER), stages=(), compat=CompatConfig("repair"),
                 after_ready=AfterReady("watch", "k3s.service", 60.0))
    node = FakeNode(cfg, Role.GUARD, units={"k3s.service": "active"})
    node.run([(1.0, "netbird_rule"), (2.0, "netbird_rule"), (10.0, "unit_failed:k3s.service"),
              (11.0, "netbird_rule"), (12.0, "netbird_rule")], horizon=20.0)
    # k3s was running: left alone, so nothing was restarted and the next repair asks
    # again; once it was restarted (at 11), none within the interval (not at 12).
    assert node.restarts == [(1.0, "k3s.service", None), (2.0, "k3s.service", None),
                             (11.0, "k3s.service", "failed")]
    assert len([a for a in node.actions if isinstance(a, A.RestartUnit)]) == 3
    assert node.repair_windows == [0.0] * 4


# --- conditions -------------------------------------------------------------------

def test_if_exists_holds_on_a_plain_node_and_waits_for_the_rule_otherwise():
    wanted = Stage("rules", (ChainExists(FILTER, "FORWARD", iifname="wt0", if_exists=True),))
    plain = FakeNode(config(stages=(wanted,), watch=(NETBIRD, FILTER)))
    plain.run([])
    assert plain.ready_at == 5.0  # no ip filter at all: nothing to wait for
    strict = FakeNode(config(stages=(Stage("rules", (ChainExists(FILTER, "FORWARD",
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
    node = FakeNode(config(settle=settle, policy=policy, watch=(NETBIRD, FILTER)))
    node.run(evs + [(61.0, "link_up", True), (61.0, "table_add", True)])
    assert node.exit is not None and node.ready_at is not None
    changes = [t for t in node.changed_at if t <= node.ready_at]
    assert node.ready_at >= max(changes, default=0.0) + settle - 1e-9
    # the conditions hold when READY comes, and every repair was at once
    assert node.link_up and node.table
    assert all(w == 0.0 for w in node.repair_windows)
