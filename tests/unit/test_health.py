"""Honest health: `fwgate status`'s judgement, the guard's back-off, prevention, the
read-only check, dead copies, stages without their unit. Pure."""
from __future__ import annotations

from dataclasses import replace

from fwgate import programmer as P
from fwgate.compat.policy import ProbeResult, judge
from fwgate.compat.reader import analyse
from fwgate.config import LinkUp, Stage, UnitActive, parse_config
from fwgate.core.conditions import skipped
from fwgate.errors import EXIT_FAILED, EXIT_INCOMPATIBLE, EXIT_OK
from fwgate.health import Role, UnitView, crash_backoff, judge as judge_health, status_json
from fwgate.model import Expr, Facts, Rule, Snapshot, Table, TableRef
from fwgate.netlink.exprs import split_expressions
from fwgate.netbird import IptablesOnPath, NetbirdEnvironment, dead_copies, prevention
from fwgate.state import State, render_metrics

NOW = 1_000_000.0
ACTIVE = UnitView("active", "running", "success", 42)


def guard_state(**kw) -> State:
    base = dict(pid=42, netns=None, role="guard", phase="guarding", ready_at=NOW - 100,
                started_at=NOW - 100, updated_at=NOW - 5, heartbeat_every=10.0,
                prevention={"in_force": True, "state": "iptables", "why": "..."})
    return State(**{**base, **kw})


def gate_state(**kw) -> State:
    return State(**{**dict(pid=41, netns=None, phase="ready", ready_at=NOW - 110,
                           updated_at=NOW - 110), **kw})


def roles(guard: State | None = None, guard_unit=ACTIVE, alive=True, gate: State | None = None,
          gate_unit=UnitView("active", "exited")):
    return (Role("gate", gate or gate_state(), False, gate_unit),
            Role("guard", guard, alive, guard_unit))


def test_a_guarding_guard_is_all_good():
    gate, guard = roles(guard_state())
    found = judge_health(gate, guard, NOW, {"in_force": True, "why": "x"})
    assert found.exit_code == EXIT_OK and not found.problems and found.running["guard"]


def test_a_stopped_guard_fails_whatever_its_last_state_says():
    # Its state file still says "guarding" with a live-looking pid: systemd knows better.
    gate, guard = roles(guard_state(), guard_unit=UnitView("inactive", "dead"))
    found = judge_health(gate, guard, NOW, None)
    assert found.exit_code == EXIT_FAILED
    assert found.problems[0].startswith("fwgate-guard.service is inactive (dead)")


def test_a_dead_or_hung_guard_fails_without_systemd():
    gate, dead = roles(guard_state(), guard_unit=None, alive=False)
    assert judge_health(gate, dead, NOW, None).exit_code == EXIT_FAILED
    gate, hung = roles(guard_state(updated_at=NOW - 31), guard_unit=None)
    found = judge_health(gate, hung, NOW, None)
    assert found.exit_code == EXIT_FAILED and "no sign of life for 31s" in found.problems[0]
    gate, fresh = roles(guard_state(updated_at=NOW - 29), guard_unit=None)
    assert judge_health(gate, fresh, NOW, None).exit_code == EXIT_OK


def test_a_guard_on_a_fallback_config_fails_loudly():
    gate, guard = roles(guard_state(config_error="/etc/fwgate.yaml: settle: bad (line 1)",
                                    config_source="<defaults>"))
    found = judge_health(gate, guard, NOW, None)
    assert found.exit_code == EXIT_FAILED and "runs on <defaults>" in found.problems[0]


def test_a_blocking_rule_seen_by_the_guard_is_exit_3():
    gate, guard = roles(guard_state(incompatible=["ip filter FORWARD handle 4: fib"]))
    assert judge_health(gate, guard, NOW, None).exit_code == EXIT_INCOMPATIBLE


def test_prevention_not_in_force_warns_but_does_not_fail():
    gate, guard = roles(guard_state())
    found = judge_health(gate, guard, NOW, {"in_force": False, "why": "no iptables on PATH"})
    assert found.exit_code == EXIT_OK
    assert found.warnings == ("prevention NOT in force: no iptables on PATH",)


def test_a_failed_gate_fails():
    gate, guard = roles(guard_state(), gate=gate_state(phase="failed", ready_at=None,
                                                       status="failed: 1 rule(s)"),
                        gate_unit=UnitView("failed", "failed", "exit-code"))
    found = judge_health(gate, guard, NOW, None)
    assert found.exit_code == EXIT_FAILED and "fwgate.service failed" in found.problems[0]


def test_status_json_has_one_shape():
    gate, guard = roles(guard_state())
    report = status_json(gate, guard, judge_health(gate, guard, NOW, None), None)
    assert report["schema"] == 1 and set(report) >= {"gate", "guard", "problems", "prevention"}
    assert report["guard"]["phase"] == "guarding" and report["guard"]["running"]
    assert report["guard"]["unit"]["name"] == "fwgate-guard.service"
    gate, guard = roles(None, guard_unit=UnitView("not-found"))
    report = status_json(gate, guard, judge_health(gate, guard, NOW, None), None)
    assert report["guard"]["state_file"] is None and not report["guard"]["running"]


def test_backoff_only_for_guards_that_never_guarded():
    assert crash_backoff(None) == (0, 0.0)
    assert crash_backoff(guard_state()) == (0, 0.0)               # was guarding: at once
    assert crash_backoff(guard_state(phase="stopped", ready_at=None)) == (0, 0.0)
    early = guard_state(phase="waiting", ready_at=None)
    assert crash_backoff(early) == (1, 1.0)
    assert crash_backoff(replace(early, crash_streak=3)) == (4, 8.0)
    assert crash_backoff(replace(early, crash_streak=30)) == (31, 60.0)


def env(**kw) -> NetbirdEnvironment:
    return NetbirdEnvironment(**{**dict(unit="netbird.service", path="/usr/sbin:/usr/bin",
                                        path_source="systemd's default"), **kw})


def test_prevention_in_each_state():
    nft = IptablesOnPath("/usr/sbin/iptables", "nf_tables")
    legacy = IptablesOnPath("/usr/sbin/iptables", "legacy")
    assert prevention(env(found=(nft,))).state == "iptables"
    assert prevention(env(found=(nft,))).in_force
    assert prevention(env(found=(legacy, nft))).state == "legacy-iptables"  # the first wins
    assert prevention(env()).state == "no-iptables"
    assert not prevention(env()).in_force
    assert prevention(env(installed=False)).in_force
    assert prevention(env(firewall_disabled=True)).state == "firewall-disabled"
    assert prevention(env(path=None, error="no D-Bus")).state == "unknown"


def test_prevention_metrics():
    text = render_metrics(guard_state(prevention={"in_force": False, "state": "no-iptables",
                                                  "why": "x"}, config_error="bad"))
    assert 'fwgate_prevention_in_force{role="guard"} 0' in text
    assert 'fwgate_prevention_info{role="guard",state="no-iptables"} 1' in text
    assert 'fwgate_config_ok{role="guard"} 0' in text
    assert f'fwgate_heartbeat_timestamp_seconds{{role="guard"}} {NOW - 5:.17g}' in text


# --- rules ------------------------------------------------------------------------

def rule(chain: str, position: int, exprs: list[bytes], tag: bytes | None = None) -> Rule:
    parsed = tuple(Expr(n, r) for e in exprs for n, r in split_expressions(e))
    return Rule("ip", "filter", chain, 10 + position, position, parsed, tag)


def filter_snapshot(*rules: Rule) -> Snapshot:
    ref = TableRef("ip", "filter")
    return Snapshot(1, {ref: Table("ip", "filter", rules=tuple(rules))}, (ref,))


def test_dead_copies_are_the_ones_after_an_identical_rule():
    iif = P.iif_accept_rule("wt0")
    tagged = rule("FORWARD", 0, iif, P.TAG_FORWARD_IIF)
    copy1, copy2 = rule("FORWARD", 1, iif), rule("FORWARD", 2, iif)
    other_chain = rule("INPUT", 0, iif)
    snap = filter_snapshot(tagged, copy1, copy2, other_chain)
    assert dead_copies(snap) == (copy1, copy2)
    # An untagged copy first and the tagged one after: the copy accepts, the tagged one
    # is Netbird's (deleted by its tag): neither is touched.
    first, later = rule("FORWARD", 0, iif), rule("FORWARD", 1, iif, P.TAG_FORWARD_IIF)
    assert dead_copies(filter_snapshot(first, later)) == ()
    # A different interface is a different rule.
    assert dead_copies(filter_snapshot(tagged, rule("FORWARD", 1, P.iif_accept_rule("wt1")))) == ()


def test_a_read_only_check_blocks_on_a_repairable_rule():
    native = rule("FORWARD", 0, P.forward_oif_rule("wt0"), P.TAG_FORWARD_OIF)
    result = ProbeResult(analyse(filter_snapshot(native)), 1)
    assert judge(result, "repair").exit_code == EXIT_OK        # the gate and guard re-encode
    live = judge(result, "repair", read_only=True)
    assert live.exit_code == EXIT_INCOMPATIBLE and "not re-encoded yet" in live.blocking[0]
    assert judge(result, "warn", read_only=True).exit_code == EXIT_INCOMPATIBLE
    assert "re-encoded" not in live.summary.replace("not re-encoded yet", "")


def test_stages_without_their_unit_are_skipped():
    stage = Stage("tunnel", (LinkUp("wt0"),), if_installed="netbird.service")
    assert skipped(stage, Facts(units={"netbird.service": "not-found"}))
    assert skipped(stage, Facts(units={"netbird.service": "masked"}))
    assert skipped(stage, Facts(units={"netbird.service": "inactive"})) is None
    assert skipped(Stage("x", (UnitActive("a.service"),)), Facts()) is None


def test_if_installed_in_the_config():
    config = parse_config("stages:\n  - name: t\n    link: wt0\n    if_installed: netbird.service\n")
    assert config.stages[0].if_installed == "netbird.service"
    assert config.units_watched() == ("netbird.service",)
    try:
        parse_config("stages:\n  - name: t\n    link: wt0\n    if_installed: netbird\n")
    except Exception as exc:
        assert "stages[0].if_installed: expected a systemd unit name" in str(exc)
        assert "(line 4)" in str(exc)
    else:
        raise AssertionError("accepted a unit name without a suffix")


def test_the_shipped_stages_belong_to_netbird():
    from fwgate.config import defaults
    assert {s.if_installed for s in defaults().stages} == {"netbird.service"}
