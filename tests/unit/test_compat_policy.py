"""What blocks k3s and what only warns: the component model (compat.impact) and the one
policy (compat.policy.judge) on hand-built snapshots. Pure."""
from __future__ import annotations

from dataclasses import replace

from fwgate import programmer as P
from fwgate.compat.binaries import Binary
from fwgate.compat.crosscheck import Call, CrossCheck, IptablesVerdict, Ran
from fwgate.compat.impact import FLANNEL, KUBE_PROXY, KUBE_ROUTER, Setup, impacts, jump_spec
from fwgate.compat.policy import ProbeResult, judge, judge_added_rule, profiles_of
from fwgate.compat.profiles import BY_VERSION, PROFILES
from fwgate.compat.reader import analyse, judge_rule
from fwgate.errors import EXIT_INCOMPATIBLE, EXIT_OK
from fwgate.model import Chain, Snapshot, Table
from fwgate.netlink import consts as C
from fwgate.netlink import exprs as X

from fwgate_testing.compat_rules import ACCEPT, ct_state, rule, snap

KR_CHECK = ("iptables -t filter -C FORWARD -m comment --comment "
            '"kube-router netpol - TEMCG2JMHZYE7H7T" -j KUBE-ROUTER-FORWARD')


def netbird(**kw):
    return rule(*P.forward_oif_rule("wt0"), userdata=P.TAG_FORWARD_OIF, **kw)


def fib(**kw):
    return rule(X.build("fib", dreg=1, result=1, flags=4), X.cmp(0, b"\0\0\0\0"), X.verdict(1), **kw)


def result(*rules, setup=Setup(), profiles=PROFILES, checks=(), binaries=()):
    return ProbeResult(analyse(snap(*rules), profiles, setup), 1, crosschecks=checks,
                       binaries=binaries)


# --- who runs what --------------------------------------------------------------------

def test_kube_router_dies_on_its_own_calls():
    got = impacts("ip", "filter", "FORWARD", 0, ("check", "list", "save"))
    fatal = [i.command for i in got if i.fatal]
    assert fatal == [KR_CHECK, "iptables -t filter -S FORWARD"]
    assert {i.component for i in got if not i.fatal} == {KUBE_ROUTER, KUBE_PROXY, FLANNEL}
    assert jump_spec("OUTPUT")[3] == "kube-router netpol - VEAAIY32XVBHCSCY"


def test_only_listing_breaks_dies_on_the_listing_at_the_next_sync():
    got = impacts("ip", "filter", "INPUT", 3, ("list", "save"))
    assert [i.command for i in got if i.fatal] == ["iptables -t filter -S INPUT"]


def test_kube_routers_own_chains():
    first = impacts("ip", "filter", "KUBE-ROUTER-FORWARD", 0, ("check", "list", "save"))
    assert "iptables -t filter -S KUBE-ROUTER-FORWARD 1" in [i.command for i in first if i.fatal]
    later = impacts("ip", "filter", "KUBE-ROUTER-FORWARD", 4, ("check", "list", "save"))
    # -S CHAIN 1 lists the chain (refused by the listing check only) and parses rule 1
    assert [i.command for i in later if i.fatal] == ["iptables -t filter -S KUBE-ROUTER-FORWARD 1"]
    parse_only = impacts("ip", "filter", "KUBE-ROUTER-FORWARD", 4, ("check",))
    assert not any(i.fatal for i in parse_only)
    assert any(i.fatal for i in impacts("ip", "filter", "KUBE-NWPLCY-COMMON", 4, ("check",)))
    assert not any(i.fatal for i in impacts("ip", "filter", "KUBE-POD-FW-X", 0, ("check", "list")))


def test_what_only_warns():
    nat = impacts("ip", "nat", "POSTROUTING", 0, ("check", "list", "save"))
    assert nat and not any(i.fatal for i in nat)
    assert {i.component for i in nat} == {KUBE_PROXY, FLANNEL}
    assert impacts("ip", "mangle", "PREROUTING", 0, ("check",)) == ()
    assert impacts("arp", "filter", "INPUT", 0, ("check", "list")) == ()
    assert impacts("bridge", "filter", "FORWARD", 0, ("check", "list")) == ()
    off = impacts("ip", "filter", "FORWARD", 0, ("check",), Setup(network_policy=False))
    assert off and not any(i.fatal for i in off)


def test_ip6_filter_is_kube_routers_only_on_dual_stack_nodes():
    args = ("ip6", "filter", "FORWARD", 0, ("check", "list"))
    assert not any(i.fatal for i in impacts(*args))
    assert any(i.fatal for i in impacts(*args, Setup(dual_stack=True)))
    assert any(i.fatal for i in impacts(*args, Setup(), ip6_is_kube_routers=True))
    assert not any(i.fatal for i in impacts(*args, Setup(dual_stack=False), True))


# --- the verdict ---------------------------------------------------------------------------

def test_blocking_versus_warning_and_exit_codes():
    r = result(netbird(position=0))
    assert judge(r, "fail").exit_code == EXIT_INCOMPATIBLE
    line = judge(r, "fail").blocking[0]
    assert "(frwacceptoif)" in line and "cmp sreg undef" in line and "kube-router dies on" in line
    # warn lets it through, still counted as what it is
    assert judge(r, "warn").exit_code == EXIT_OK and judge(r, "warn").blocking == (line,)
    assert judge(r, "repair").exit_code == EXIT_OK and judge(r, "repair").resolved
    # the same rule in nat: kube-proxy and flannel log and retry
    nat = result(fib(table="nat", chain="POSTROUTING"))
    v = judge(nat, "fail")
    assert v.exit_code == EXIT_OK and v.degraded and "logged and retried" in v.warnings[0]
    # in mangle nothing of k3s reads it; in arp and bridge tables, neither
    for r in (result(fib(table="mangle", chain="PREROUTING")), result(fib(family="arp", chain="INPUT"))):
        v = judge(r, "fail")
        assert v.exit_code == EXIT_OK and "no k3s component reads it" in v.warnings[0], v


def test_misreads_warn_and_say_what_kube_routers_sync_makes_of_them():
    setl = rule(X.payload_load(1, 12, 4), X.lookup("allowed"), *ACCEPT)
    r = result(setl)
    v = judge(r, "fail")
    assert v.exit_code == EXIT_OK and v.blocking == ()
    assert "accept-all" in v.warnings[0] and "after kube-router's next policy sync" in v.warnings[0]
    (m,) = r.report.misread
    assert m.kind == "lookup" and "accept-all" in m.after_sync
    nat = result(rule(X.payload_load(1, 12, 4), X.lookup("s"), *ACCEPT, table="nat",
                      chain="PREROUTING"))
    assert nat.report.misread[0].after_sync is None  # kube-router restores filter only
    both = result(setl, fib(handle=2, position=1))
    assert "the sync aborts" in both.report.misread[0].after_sync


def test_versions_each_finding_holds_for():
    mark_set = rule(X.immediate_data(b"\x01\0\0\0", 1), X.build("meta", key=C.META_MARK, sreg=1))
    r = result(mark_set)
    (f,) = r.report.findings
    assert f.versions == ("1.8.9",) and f.blocking
    assert "(iptables 1.8.9)" in judge(r, "fail").blocking[0]
    newer = result(mark_set, profiles=(BY_VERSION["1.8.11"],))
    assert newer.report.findings == () and judge(newer, "fail").exit_code == EXIT_OK
    assert profiles_of(()) == PROFILES
    b = Binary("/usr/sbin/iptables", ("/usr/sbin/iptables",), version="1.8.11", mode="nf_tables")
    assert profiles_of((b,)) == (BY_VERSION["1.8.11"],)
    assert profiles_of((b, replace(b, version=None))) == PROFILES   # one unknown: all
    assert profiles_of((replace(b, mode="legacy"),)) == PROFILES


def crosscheck(exit_codes: dict[str, int], binary=None) -> CrossCheck:
    calls = {KR_CHECK: Call("ip", "filter", "check", "FORWARD", tuple(jump_spec("FORWARD"))),
             "iptables -t filter -S FORWARD": Call("ip", "filter", "list", "FORWARD")}
    runs = tuple(Ran(calls[k], v) for k, v in exit_codes.items())
    verdict = IptablesVerdict("/usr/sbin/iptables (iptables 1.8.9, nf_tables)",
                              "iptables v1.8.9 (nf_tables)", runs)
    return CrossCheck(verdict, (), frozenset(), binary)


def test_a_binary_that_reads_the_rule_unblocks_it():
    r = result(fib(position=0), checks=(crosscheck({KR_CHECK: 1, "iptables -t filter -S FORWARD": 0}),))
    v = judge(r, "fail")
    assert v.exit_code == EXIT_OK and "not blocking" in v.warnings[0]
    # when one of the binaries k3s could run did not answer, the reader is believed
    b = Binary("/a/iptables", ("/a/iptables",), version="1.8.9")
    r2 = replace(r, binaries=(b, replace(b, path="/b/iptables")))
    assert judge(r2, "fail").exit_code == EXIT_INCOMPATIBLE
    # a failed call is not refuted
    r3 = result(fib(position=0), checks=(crosscheck({KR_CHECK: 3, "iptables -t filter -S FORWARD": 3}),))
    assert judge(r3, "fail").exit_code == EXIT_INCOMPATIBLE


def test_judge_added_rule_is_the_guards_fast_path():
    f = judge_added_rule(netbird(position=0))
    assert f.repairable and f.blocking and f.versions == tuple(p.version for p in PROFILES)
    assert judge_added_rule(rule(*P.iif_accept_rule("wt0"))) is None
    assert judge_added_rule(rule(*ct_state(1), *ACCEPT, table="netbird")) is None
    wrong = judge_added_rule(rule(X.payload_load(1, 12, 4), X.lookup("s"), *ACCEPT))
    assert wrong.kind == "lookup" and not wrong.breaks
    only_old = judge_added_rule(rule(X.immediate_data(b"\x01\0\0\0", 1),
                                     X.build("meta", key=C.META_MARK, sreg=1)),
                                (BY_VERSION["1.8.11"],))
    assert only_old is None


def test_judge_rule_defaults_to_1_8_9():
    bad, _ = judge_rule(netbird(position=0))
    assert bad.versions == ("1.8.9",) and bad.blocking


def test_dropped_base_chains_are_reported_not_judged():
    foreign = Chain("NB", 9, C.NF_INET_FORWARD, 10, 1, "filter")
    r = fib(chain="NB")
    table = Table("ip", "filter", chains=(Chain("FORWARD", 1, 2, 0, 1, "filter"), foreign), rules=(r,))
    report = analyse(Snapshot(1, {table.ref: table}, (table.ref,)))
    assert report.findings == () and len(report.dropped_chains) == 1
    d = report.dropped_chains[0]
    assert (d.chain, d.rules) == ("NB", 1) and "priority 10" in d.why


def test_a_dropped_chain_in_filter_is_deleted_at_every_sync_in_check_and_compat():
    from fwgate.report import compat_text, report_json
    foreign = Chain("NB", 9, C.NF_INET_FORWARD, 10, 1, "filter")
    table = Table("ip", "filter", chains=(Chain("FORWARD", 1, 2, 0, 1, "filter"), foreign),
                  rules=(fib(chain="NB"),))
    report = analyse(Snapshot(1, {table.ref: table}, (table.ref,)))
    verdict = judge(ProbeResult(report, 1), "fail")
    assert verdict.exit_code == EXIT_OK   # a warning: nothing k3s dies on
    assert any("ip filter NB" in w and "deleted at every sync" in w for w in verdict.warnings)
    text = compat_text(report_json(report))
    assert "dropped: ip filter NB (1 rules)" in text and "deleted at every sync" in text


def test_a_rule_that_breaks_only_the_sync_says_every_sync_fails_in_check():
    bad = rule(*ct_state(1), *ACCEPT, chain="KUBE-ROUTER-FORWARD-X", position=3)
    verdict = judge(result(bad), "fail")
    assert any("every sync fails" in w for w in verdict.warnings), verdict.warnings
