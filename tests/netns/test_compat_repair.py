"""Repair on the real kernel: Netbird's `frwacceptoif` rule re-encoded the way iptables
writes it, judged by real iptables, nft and Netbird's own "is my rule there" check."""
from __future__ import annotations

import errno

import pytest

from fwgate.netlink import consts as C
from fwgate.netlink import exprs as X
from fwgate import programmer as P
from fwgate.adapters.nfsock import NetlinkError, NfSocket
from fwgate.adapters.nft import snapshot
from fwgate.netlink.nftables import decode_events
from fwgate.compat.reader import analyse
from fwgate.compat.equivalents import iptables_equivalent
from fwgate.adapters.probe import probe
from fwgate.compat.repair import plan_repairs
from fwgate.model import TableRef
from fwgate.netlink.exprs import split_expressions, stable_bytes
from fwgate.model import Expr, Rule
from fwgate_testing.helpers import in_netns, sh

KR = ["-m", "comment", "--comment", "kube-router netpol - TEMCG2JMHZYE7H7T",
      "-j", "KUBE-ROUTER-FORWARD"]
FILTER = TableRef("ip", "filter")
PACKETS, BYTES = 7, 420


def netbird_oif_rule() -> list[bytes]:
    exprs = P.forward_oif_rule("wt0")
    exprs[5] = X.counter(PACKETS, BYTES)  # traffic has already been counted
    return exprs


def setup_node(ns: str, tools: tuple[str, ...] = ("iptables",)) -> None:
    """kube-router's jump (real iptables), then Netbird's three rules on top (netlink)."""
    for tool in tools:
        sh(ns, tool, "-N", "KUBE-ROUTER-FORWARD")
        sh(ns, tool, "-A", "FORWARD", *KR)

    def program() -> None:
        with NfSocket() as sock:
            messages = P.NetbirdProgrammer(sock, create_filter=True).missing_filter_messages()
            for i, (cmd, family, flags, payload) in enumerate(messages):
                if P.TAG_FORWARD_OIF in payload:  # the same rule, with counts in it
                    messages[i] = P.rule_msg(family, "filter", "FORWARD", netbird_oif_rule(),
                                             P.TAG_FORWARD_OIF, append=False)
            sock.batch(messages)
    in_netns(ns, program)


def take(ns: str, refs=(FILTER,)):
    def work():
        with NfSocket() as sock:
            return snapshot(sock, list(refs))
    return in_netns(ns, work)


def apply_repairs(sock, dry_run: bool = False, attempts: int = 5):
    return probe(sock, repair=True, dry_run=dry_run, attempts=attempts).result


def repair(ns: str, **kwargs):
    def work():
        with NfSocket() as sock:
            return apply_repairs(sock, **kwargs)
    return in_netns(ns, work)


def genid(ns: str) -> int:
    def work():
        with NfSocket() as sock:
            return sock.genid()
    return in_netns(ns, work)


def tagged(snap, tag: bytes, ref=FILTER):
    return [r for r in snap.table(ref).rules if r.userdata == tag]


def as_rule(exprs: list[bytes], family: str = "ip"):
    parsed = [Expr(n, r) for e in exprs for n, r in split_expressions(e)]
    return Rule(family, "filter", "FORWARD", 1, 0, tuple(parsed), P.TAG_FORWARD_OIF)


def test_netbird_rule_breaks_kube_router_before_repair(netns):
    setup_node(netns)
    check = sh(netns, "iptables", "-t", "filter", "-C", "FORWARD", *KR, check=False)
    assert check.returncode == 3 and "cmp sreg undef" in check.stderr
    report = analyse(take(netns))
    assert [f.rule.userdata for f in report.findings] == [P.TAG_FORWARD_OIF]
    assert report.findings[0].repairable


def test_repair_makes_iptables_read_the_chain(netns):
    setup_node(netns)
    before = tagged(take(netns), P.TAG_FORWARD_OIF)[0]

    result = repair(netns)

    assert [r.rule.handle for r in result.repaired] == [before.handle]
    assert result.left == () and result.attempts == 1
    # kube-router's start-up check and listing now work.
    assert sh(netns, "iptables", "-t", "filter", "-C", "FORWARD", *KR, check=False).returncode == 0
    listing = sh(netns, "iptables", "-S", "FORWARD")
    rules = [ln for ln in listing.stdout.splitlines() if ln.startswith("-A")]
    assert rules[0] == "-A FORWARD -o wt0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
    assert "COMMIT" in sh(netns, "iptables-save", "-t", "filter").stdout
    # Still first, still tagged with Netbird's raw bytes, counters carried over.
    after = take(netns)
    forward = after.table(FILTER).rules_of("FORWARD")
    first = forward[0]
    assert first.userdata == b"frwacceptoif"
    assert first.expr_names == ["meta", "cmp", "match", "counter", "immediate"]
    counter = first.exprs[3].fields
    assert (counter["packets"], counter["bytes"]) == (PACKETS, BYTES)
    assert before.handle not in [r.handle for r in forward]
    assert [r.userdata for r in forward[1:]] == [P.TAG_FORWARD_IIF, None]  # nothing else moved
    # nft 1.0.6 translates the xt match back into its own words: the same meaning.
    shown = sh(netns, "nft", "list", "chain", "ip", "filter", "FORWARD").stdout
    line = shown.splitlines()[3].strip()
    assert line.startswith('oifname "wt0" ct state ') and line.endswith("accept"), line
    assert set(line.split()[4].split(",")) == {"established", "related"}
    assert f"counter packets {PACKETS} bytes {BYTES}" in line
    debug = sh(netns, "nft", "--debug=netlink", "list", "chain", "ip", "filter", "FORWARD").stdout
    assert "[ match name conntrack rev 3 ]" in debug and "[ ct load" not in debug
    assert analyse(after).ok


def test_netbird_does_not_add_its_rule_again(netns):
    setup_node(netns)
    repair(netns)

    def missing():
        with NfSocket() as sock:
            return P.NetbirdProgrammer(sock, create_filter=True).missing_filter_messages()
    assert in_netns(netns, missing) == []


def test_encoding_is_byte_for_byte_what_iptables_writes(netns):
    """The repaired rule against the same rule written by iptables itself."""
    setup_node(netns)
    repair(netns)
    sh(netns, "iptables", "-A", "FORWARD", "-o", "wt0", "-m", "conntrack", "--ctstate",
       "RELATED,ESTABLISHED", "-j", "ACCEPT")
    forward = take(netns).table(FILTER).rules_of("FORWARD")
    ours, theirs = forward[0], forward[-1]
    assert ours.expr_names == theirs.expr_names
    for mine, real in zip(ours.exprs, theirs.exprs):
        assert stable_bytes(mine.name, mine.raw) == stable_bytes(real.name, real.raw), mine.name
    # ... and the planner's own encoding, before the kernel saw it (the kernel drops
    # NLA_F_NESTED flags when it dumps, so compare decoded attributes here).
    planned = [Expr(n, r) for e in iptables_equivalent(as_rule(netbird_oif_rule())).exprs
               for n, r in split_expressions(e)]
    assert [(e.name, e.fields) for e in planned if e.name != "counter"] == \
        [(e.name, e.fields) for e in theirs.exprs if e.name != "counter"]


def test_ip6_rule_is_repaired_too(netns):
    sh(netns, "ip6tables", "-N", "KUBE-ROUTER-FORWARD")
    sh(netns, "ip6tables", "-A", "FORWARD", *KR)

    def program():
        with NfSocket() as sock:
            sock.batch([P.rule_msg(C.FAMILIES["ip6"], "filter", "FORWARD", netbird_oif_rule(),
                                   P.TAG_FORWARD_OIF, append=False)])
    in_netns(netns, program)
    assert sh(netns, "ip6tables", "-C", "FORWARD", *KR, check=False).returncode == 3

    result = repair(netns)

    assert len(result.repaired) == 1 and result.repaired[0].rule.family == "ip6"
    assert sh(netns, "ip6tables", "-C", "FORWARD", *KR, check=False).returncode == 0
    sh(netns, "ip6tables", "-A", "FORWARD", "-o", "wt0", "-m", "conntrack", "--ctstate",
       "RELATED,ESTABLISHED", "-j", "ACCEPT")
    forward = take(netns, [TableRef("ip6", "filter")]).table(TableRef("ip6", "filter")) \
        .rules_of("FORWARD")
    assert forward[0].userdata == P.TAG_FORWARD_OIF
    assert [stable_bytes(e.name, e.raw) for e in forward[0].exprs] == \
        [stable_bytes(e.name, e.raw) for e in forward[-1].exprs]


def test_second_run_changes_nothing(netns):
    setup_node(netns)
    repair(netns)
    gen = genid(netns)

    again = repair(netns)

    assert again.repaired == () and genid(netns) == gen


def test_dry_run_only_plans(netns):
    setup_node(netns)
    gen = genid(netns)

    planned = repair(netns, dry_run=True)

    assert len(planned.planned) == 1 and planned.repaired == ()
    assert genid(netns) == gen
    assert sh(netns, "iptables", "-C", "FORWARD", *KR, check=False).returncode == 3


def test_rules_without_an_equivalent_are_left_alone(netns):
    setup_node(netns)
    sh(netns, "nft", "insert rule ip filter FORWARD fib daddr type local accept")

    result = repair(netns)

    assert [f.rule.expr_names[0] for f in result.left] == ["fib"]
    assert len(result.repaired) == 1  # Netbird's rule still gets fixed
    assert "fib daddr type local accept" in sh(netns, "nft", "list", "chain", "ip", "filter",
                                               "FORWARD").stdout


def test_stale_plan_is_refused_by_the_kernel(netns):
    """A change between analysis and commit: the genid-guarded batch fails whole."""
    setup_node(netns)
    snap = take(netns)
    plan = plan_repairs(snap, analyse(snap))
    sh(netns, "nft", "add rule ip filter FORWARD counter")  # someone else commits

    def commit():
        with NfSocket() as sock:
            sock.batch([m for r in plan for m in r.messages()], genid=snap.genid)
    with pytest.raises(NetlinkError) as refused:
        in_netns(netns, commit)

    assert refused.value.errno == errno.ERESTART
    still = tagged(take(netns), P.TAG_FORWARD_OIF)
    assert [r.handle for r in still] == [plan[0].rule.handle]   # untouched
    assert still[0].expr_names[2] == "ct"


class Interfering:
    """A socket that lets someone else commit right before our batch, `times` times."""

    def __init__(self, sock: NfSocket, change, times: int = 1):
        self.sock, self.change, self.left = sock, change, times

    def __getattr__(self, name):
        return getattr(self.sock, name)

    def batch(self, messages, genid=None):
        if self.left:
            self.left -= 1
            self.change()
        return self.sock.batch(messages, genid=genid)


def test_retry_after_netbird_replaced_its_rule(netns):
    """Netbird deletes and re-adds its rule (new handle) while we plan: the first batch
    is refused, the retry repairs the new rule, nothing else is deleted, and no
    committed generation ever lacks the accept rule."""
    setup_node(netns)
    old = tagged(take(netns), P.TAG_FORWARD_OIF)[0]

    def work():
        with NfSocket(groups=(C.NFNLGRP_NFTABLES,)) as events, NfSocket() as sock, \
                NfSocket() as netbird:
            def replace():
                netbird.batch([P.del_rule_msg(C.FAMILIES["ip"], "filter", "FORWARD", old.handle),
                               P.rule_msg(C.FAMILIES["ip"], "filter", "FORWARD",
                                          netbird_oif_rule(), P.TAG_FORWARD_OIF, append=False)])
            result = apply_repairs(Interfering(sock, replace))
            seen = []
            events.sock.setblocking(False)
            try:
                while True:
                    seen += decode_events(events.recv_messages())
            except BlockingIOError:
                pass
            return result, seen
    result, events = in_netns(netns, work)

    assert result.attempts == 2
    (fixed,) = result.repaired
    assert fixed.rule.handle != old.handle  # Netbird's new rule, not the stale handle
    forward = take(netns).table(FILTER).rules_of("FORWARD")
    assert [r.userdata for r in forward] == [P.TAG_FORWARD_OIF, P.TAG_FORWARD_IIF, None]
    assert forward[0].expr_names[2] == "match"
    # Per committed generation: a DELRULE never comes without its NEWRULE.
    generations, current = [], []
    for event in events:
        if event.kind == "NEWGEN":
            generations.append(current)
            current = []
        else:
            current.append(event.kind)
    assert len(generations) == 2
    assert all(g.count("NEWRULE") == g.count("DELRULE") == 1 for g in generations)


def test_gives_up_when_the_ruleset_never_holds_still(netns):
    setup_node(netns)

    def work():
        with NfSocket() as sock, NfSocket() as other:
            def churn():
                other.batch([P.rule_msg(C.FAMILIES["ip"], "filter", "FORWARD", [X.counter()])])
            return apply_repairs(Interfering(sock, churn, times=3), attempts=3)
    result = in_netns(netns, work)
    assert result.conflict and result.repaired == () and result.attempts == 3
    assert tagged(take(netns), P.TAG_FORWARD_OIF)[0].expr_names[2] == "ct"
