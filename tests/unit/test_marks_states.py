"""Connection states in rules, and a write on later packets only whose reader's chain
accepts those packets by state."""
from __future__ import annotations

import struct

from fwgate_testing.mark_rules import (
    IIF_WT0, base, regular, rule, set_mark, snapshot, verdict, xt_connmark, xt_match,
)

from fwgate.marks import find_conflicts, harms
from fwgate.marks.states import ANY_STATE, ESTABLISHED_OR_RELATED, conditions
from fwgate.netlink import consts as C
from fwgate.netlink import exprs as X


def ct_state(mask: int) -> list[bytes]:
    """nft `ct state X,Y`: load, mask, compare with 0."""
    return [X.ct_load(C.CT_STATE), X.bitwise(1, 1, struct.pack("=I", mask), b"\0" * 4),
            X.cmp(C.CMP_NEQ, b"\0" * 4)]


def xt_ctstate(mask: int, invert: bool = False) -> bytes:
    """`-m conntrack [!] --ctstate`, as iptables lays out xt_conntrack_mtinfo3."""
    info = bytearray(168)
    struct.pack_into("=HHH", info, 146, 1, 1 if invert else 0, mask)
    return X.xt("match", "conntrack", 3, bytes(info))


def test_states_a_rule_requires():
    est = C.CT_STATE_ESTABLISHED | C.CT_STATE_RELATED
    assert conditions(rule("X", ct_state(est), verdict("accept"))) == (est, ())
    assert conditions(rule("X", xt_ctstate(est), verdict("accept"))).states == est
    assert conditions(rule("X", xt_ctstate(est, invert=True))).states == ANY_STATE & ~est
    both = conditions(rule("X", IIF_WT0, xt_ctstate(C.CT_STATE_NEW), verdict("drop")))
    assert both.states == C.CT_STATE_NEW and len(both.others) == 2
    assert conditions(rule("X", IIF_WT0, verdict("jump", "Y"))).others == \
        conditions(rule("X", IIF_WT0, verdict("drop"))).others


def tailscale_restore() -> tuple:
    """tailscale/tailscale util/linuxfw/iptables_runner.go AddConnmarkSaveRule: the
    restore into 0xff0000, on established and related packets only."""
    chains = [base("PREROUTING", C.NF_INET_PRE_ROUTING, -150)]
    restore = xt_connmark(2, ctmask=0xFF0000, nfmask=0xFF0000)
    return ("ip", "mangle", chains, [rule("PREROUTING", xt_ctstate(ESTABLISHED_OR_RELATED), restore,
                                          table="mangle")])


def netbird(established_accept: bool) -> tuple:
    """Netbird's mark and forward filter; its route chain accepts established packets
    first (or, for the contrast, accepts nothing)."""
    chains = [base("netbird-mangle-prerouting", C.NF_INET_PRE_ROUTING, -150),
              base("netbird-acl-forward-filter", C.NF_INET_FORWARD, 0), regular("netbird-rt-fwd"),
              base("netbird-mangle-postrouting", C.NF_INET_POST_ROUTING, -150)]
    rules = [rule("netbird-mangle-prerouting", IIF_WT0, set_mark(0x1BD20), table="netbird"),
             rule("netbird-mangle-prerouting", IIF_WT0, ct_state(C.CT_STATE_NEW),
                  set_mark(0x1BD10, ct=True), table="netbird"),
             rule("netbird-acl-forward-filter", xt_match("mark", 0x1BD20, 0xFFFFFFFF),
                  verdict("accept"), table="netbird"),
             rule("netbird-acl-forward-filter", IIF_WT0, verdict("jump", "netbird-rt-fwd"),
                  table="netbird"),
             rule("netbird-acl-forward-filter", IIF_WT0, verdict("drop"), table="netbird")]
    if established_accept:
        rules.append(rule("netbird-rt-fwd", ct_state(ESTABLISHED_OR_RELATED), verdict("accept"),
                          table="netbird"))
    return ("ip", "netbird", chains, rules)


def test_a_restore_on_later_packets_that_the_readers_chain_accepts_by_state():
    found = [c for c in find_conflicts(snapshot(tailscale_restore(), netbird(True)))
             if c.writer.owner == "tailscale"]
    assert found and not harms(tuple(found))
    assert all("established and related packets only" in c.why_shared for c in found)
    # the chain that drops them instead: a harm
    found = harms(find_conflicts(snapshot(tailscale_restore(), netbird(False))))
    assert [(c.writer.owner, c.reader.owner, c.effect) for c in found] == \
        [("tailscale", "netbird", "accept missed")]
