"""The repair planner and the shapes it knows an exact iptables equivalent for. Pure."""
from __future__ import annotations

import struct

from fwgate.netlink import consts as C
from fwgate.netlink import exprs as X
from fwgate import programmer as P
from fwgate.netlink import attrs as A
from fwgate.compat.reader import analyse
from fwgate.compat.equivalents import conntrack_mtinfo3, iptables_equivalent, xt_state_mask
from fwgate.compat.repair import plan_repairs
from fwgate.model import Expr

from fwgate_testing.compat_rules import ACCEPT, EST_REL, ZERO, ct_state, oifname, rule, snap

NEW = struct.pack("=I", 8)


def decoded(exprs) -> list[tuple[str, dict]]:
    return [(n, Expr(n, r).fields) for e in exprs for n, r in X.split_expressions(e)]


def test_conntrack_info_layout():
    info = conntrack_mtinfo3(0x6)
    assert len(info) == 168 and info[146:152] == b"\x01\x00\x00\x00\x06\x00"
    assert not info[:146].strip(b"\0") and not info[152:].strip(b"\0")
    assert conntrack_mtinfo3(0x108, invert=True)[146:152] == b"\x01\x00\x01\x00\x08\x01"


def test_ct_state_bits_map_to_xt_conntrack_bits():
    assert xt_state_mask(0x6) == 0x6
    assert xt_state_mask(64 | 8) == 256 | 8   # UNTRACKED differs between nft and xt
    assert xt_state_mask(0x10) is None and xt_state_mask(0) is None


def test_netbird_rule_becomes_what_iptables_writes():
    r = rule(*P.forward_oif_rule("wt0")[:5], X.counter(7, 420), X.verdict(C.NF_ACCEPT),
             userdata=P.TAG_FORWARD_OIF)
    eq = iptables_equivalent(r)
    assert eq.text == "-o wt0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
    got = decoded(eq.exprs)
    assert [n for n, _ in got] == ["meta", "cmp", "match", "counter", "immediate"]
    assert got[0][1] == {"key": C.META_OIFNAME, "dreg": 1}
    assert got[1][1]["data"] == b"wt0\0"                       # 4 bytes, not padded
    assert got[2][1] == {"name": "conntrack", "rev": 3, "info": conntrack_mtinfo3(6)}
    assert (got[3][1]["packets"], got[3][1]["bytes"]) == (7, 420)
    assert got[4][1]["data"] == ("accept", None)


def test_known_variants():
    cases = [
        ((*oifname(), *ct_state(2), *ACCEPT), "-o wt0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"),
        ((*ct_state(1), X.verdict(0)), "-m conntrack --ctstate RELATED,ESTABLISHED -j DROP"),
        ((X.meta_load(C.META_IIFNAME, 3), X.cmp(C.CMP_NEQ, b"eth", 3), X.ct_load(0, 1),
          X.bitwise(1, 1, NEW, ZERO), X.cmp(C.CMP_EQ, ZERO, 1), X.verdict(-3, "CHAIN")),
         "! -i eth+ -m conntrack ! --ctstate NEW -j CHAIN"),
        ((*oifname(9, padded=False), *ct_state(10), X.verdict(-5)),
         "-o wt0 -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN"),
    ]
    for exprs, text in cases:
        eq = iptables_equivalent(rule(*exprs))
        assert eq is not None and eq.text == text, text
    assert iptables_equivalent(rule(*oifname(), *ct_state(2), *ACCEPT, family="ip6")) is not None


def test_shapes_without_an_exact_equivalent():
    odd_bit = struct.pack("=I", 0x10)
    not_known = [
        (*oifname(), X.ct_load(0, 2), X.bitwise(2, 3, EST_REL, ZERO),
         X.cmp(C.CMP_NEQ, ZERO, 3), *ACCEPT),                             # registers disagree
        (*oifname(), X.ct_load(0, 2), X.bitwise(2, 2, odd_bit, ZERO), X.cmp(C.CMP_NEQ, ZERO, 2),
         *ACCEPT),                                                       # no xt state bit
        (*oifname(), X.ct_load(0, 2), X.bitwise(2, 2, NEW, NEW), X.cmp(C.CMP_NEQ, ZERO, 2),
         *ACCEPT),                                                       # xor
        (*oifname(), *ct_state(2), X.counter(), X.verdict(-1)),            # continue
        (*oifname(), *ct_state(2), X.counter(), X.verdict(1), X.counter()),  # something after
        (*oifname(), X.ct_load(1, 2), X.bitwise(2, 2, NEW, ZERO), X.cmp(C.CMP_NEQ, ZERO, 2),
         *ACCEPT),                                                       # ct direction, not state
        (X.meta_load(3), X.cmp(C.CMP_EQ, ZERO), *ct_state(2), *ACCEPT),     # mark, not a name
        (X.meta_load(C.META_OIFNAME), X.cmp(C.CMP_EQ, b"\0" * 16), *ct_state(2), *ACCEPT),
        (*ct_state(2)[:2], X.cmp(C.CMP_NEQ, b"\x01\0\0\0", 2), *ACCEPT),  # != 1, not != 0
        (X.payload_load(1, 12, 4), X.cmp(C.CMP_EQ, ZERO), *ct_state(2), *ACCEPT),
    ]
    for exprs in not_known:
        assert iptables_equivalent(rule(*exprs)) is None, exprs
    assert iptables_equivalent(rule(*oifname(), *ct_state(2), *ACCEPT, family="bridge")) is None
    assert iptables_equivalent(rule(Expr("ct", b"\x08\x00"), *ACCEPT)) is None   # unreadable


def test_plan_covers_repairable_rules_only():
    netbird = rule(*P.forward_oif_rule("wt0"), userdata=P.TAG_FORWARD_OIF, handle=9)
    misread = rule(*oifname(1), *ct_state(9), *ACCEPT, handle=10, position=1)
    fib = rule(X.build("fib", dreg=1, result=1, flags=4),
               X.cmp(C.CMP_EQ, b"\x02\0\0\0"), *ACCEPT, handle=11, position=2)
    s = snap(netbird, misread, fib)
    plan = plan_repairs(s, analyse(s))
    assert [r.rule.handle for r in plan] == [9, 10]   # misread rules get fixed too
    assert "cmp sreg undef" in plan[0].reason
    assert plan_repairs(snap(fib), analyse(s)) == []   # rules not in the snapshot: nothing


def test_messages_insert_before_then_delete():
    r = rule(*P.forward_oif_rule("wt0"), userdata=P.TAG_FORWARD_OIF, handle=42)
    (repair,) = plan_repairs(snap(r), analyse(snap(r)))
    (new_cmd, new_family, new_flags, new), (del_cmd, del_family, _, old) = repair.messages()
    assert (new_cmd, del_cmd) == (C.NEWRULE, C.DELRULE)
    assert new_family == del_family == C.FAMILIES["ip"]
    assert not new_flags & C.NLM_F_APPEND          # before the old rule, not after
    a = A.attrs(new)
    assert A.as_u64(a[C.NFTA_RULE_POSITION]) == 42
    assert a[C.NFTA_RULE_USERDATA] == b"frwacceptoif"     # raw, as Netbird wrote it
    assert A.as_str(a[C.NFTA_RULE_CHAIN]) == "FORWARD"
    names = [n for n, _ in X.split_expressions(a[C.NFTA_RULE_EXPRESSIONS])]
    assert names == ["meta", "cmp", "match", "counter", "immediate"]
    assert A.as_u64(A.attrs(old)[C.NFTA_RULE_HANDLE]) == 42


def test_rule_without_userdata_gets_none():
    r = rule(*oifname(), *ct_state(2), *ACCEPT)
    (repair,) = plan_repairs(snap(r), analyse(snap(r)))
    assert C.NFTA_RULE_USERDATA not in A.attrs(repair.messages()[0][3])
