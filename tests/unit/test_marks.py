"""The mark model, owners and conflicts on hand-built rules.

The xt structs here are packed by hand; tests/netns/test_marks_xt.py checks the same
decoding against what the real iptables writes."""
from __future__ import annotations

import ast
import pathlib
import struct
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fwgate.marks import conflict_json, conflict_text, conflicts_json, find_conflicts, harms
from fwgate.marks.conflicts import BEFORE, LATER_PACKETS, TIE, flips
from fwgate.marks.model import ALL, CT, META, Read, Write, comment_of, rule_marks
from fwgate.marks.owners import owner_of
from fwgate.model import Rule, Snapshot, Table, TableRef
from fwgate.netlink import consts as C
from fwgate.netlink import exprs as X
from fwgate_testing.mark_rules import (
    IIF_WT0, base, comment, mark_op, mark_test, regular, rule, set_mark, snapshot,
    u32, verdict, xt_connmark, xt_mark, xt_match,
)

# --- the model, rule by rule ----------------------------------------------------------

def only(rule_: Rule):
    m = rule_marks(rule_)
    return m.writes, m.reads


def test_whole_value_write_claims_all_bits():
    (w,), () = only(rule("x", IIF_WT0, set_mark(0x1bd20)))
    assert w == Write(META, force0=ALL & ~0x1bd20, force1=0x1bd20)
    assert w.bits == ALL and w.describe() == "meta mark set 0x1bd20"


def test_native_masked_writes():
    (w,), _ = only(rule("x", mark_op(ALL & ~0x4000, 0x4000)))          # mark or 0x4000
    assert (w.force1, w.force0, w.toggle, w.bits) == (0x4000, 0, 0, 0x4000)
    (w,), _ = only(rule("x", mark_op(0xffff, 0)))                        # mark and 0xffff
    assert (w.force0, w.bits) == (0xffff0000, 0xffff0000)
    (w,), _ = only(rule("x", mark_op(ALL, 0x3)))                         # mark xor 3
    assert (w.toggle, w.bits) == (3, 3)
    (w,), _ = only(rule("x", mark_op(0xffff0000, 0xd20)))                # and 0xffff0000 or 0xd20
    assert (w.force1, w.force0) == (0xd20, 0xffff & ~0xd20)


def test_copies_between_marks():
    # ct mark set meta mark: every ct bit takes the packet's
    (w,), _ = only(rule("x", X.meta_load(C.META_MARK), X.build("ct", key=C.CT_MARK, sreg=1)))
    assert (w.key, w.copied, w.force0) == (CT, ALL, 0)
    # meta mark set ct mark and 0xff: low byte copied, the rest cleared
    (w,), _ = only(rule("x", X.ct_load(C.CT_MARK), X.bitwise(1, 1, u32(0xff), u32(0)),
                        X.build("meta", key=C.META_MARK, sreg=1)))
    assert (w.key, w.copied, w.force0) == (META, 0xff, ALL & ~0xff)
    # once the connection's mark is known to be 0x1bd10, the copy is a constant
    assert w.given((0x1bd10, 0)) == Write(META, force0=ALL & ~0x10, force1=0x10)


def test_reads_exact_masked_and_negated():
    _, (r,) = only(rule("x", mark_test(0x1bd20), verdict("accept")))
    assert r == Read(META, ALL, 0x1bd20)
    _, (r,) = only(rule("x", mark_test(0x10000, 0x10000, C.CMP_NEQ)))
    assert r == Read(META, 0x10000, 0x10000, negate=True)
    _, (r,) = only(rule("x", mark_test(0x1, 0x1, ct=True)))
    assert r == Read(CT, 1, 1)
    # (mark & 0xff) == 0x100 is never true: it does not depend on the mark
    assert only(rule("x", mark_test(0x100, 0xff))) == ((), ())


def test_lookups_and_order_tests_read_without_value():
    _, (r,) = only(rule("x", X.meta_load(C.META_MARK), X.lookup("marks"), verdict("drop")))
    assert r == Read(META, ALL, None)
    _, (r,) = only(rule("x", X.meta_load(C.META_MARK), X.cmp(C.CMP_GT, u32(5))))
    assert r.value is None
    m = rule_marks(rule("x", X.meta_load(C.META_MARK), X.build("lookup", set="vm", sreg=1, dreg=0)))
    assert m.vmap and m.reads == (Read(META, ALL, None),)


def test_registers_are_tracked_by_word():
    # a later load into the same register replaces the mark
    assert only(rule("x", X.meta_load(C.META_MARK), *IIF_WT0)) == ((), ())
    # NFT_REG32_01 (9) is word 1: a 16-byte iifname load into reg 1 (words 0-3) clobbers it
    assert only(rule("x", X.meta_load(C.META_MARK, 9), X.meta_load(C.META_IIFNAME, 1),
                     X.cmp(C.CMP_EQ, u32(5), 9))) == ((), ())
    # ... a 4-byte load into reg 8 (word 0) does not
    _, (r,) = only(rule("x", X.meta_load(C.META_MARK, 9), X.meta_load(C.META_L4PROTO, 8),
                        X.cmp(C.CMP_EQ, u32(5), 9)))
    assert r == Read(META, ALL, 5)


def test_xt_mark_targets():
    cases = {  # iptables option → (value, mask) iptables stores → (force1, force0, toggle)
        "--set-xmark 0x10000/0x10000": ((0x10000, 0x10000), (0x10000, 0, 0)),
        "--set-mark 0/0x10000": ((0, 0x10000), (0, 0x10000, 0)),
        "--or-mark 0x4000": ((0x4000, 0x4000), (0x4000, 0, 0)),
        "--and-mark 0xff": ((0, ALL & ~0xff), (0, ALL & ~0xff, 0)),
        "--xor-mark 0x4000": ((0x4000, 0), (0, 0, 0x4000)),
    }
    for option, ((value, mask), (f1, f0, tg)) in cases.items():
        (w,), _ = only(rule("x", xt_mark(value, mask)))
        assert (w.key, w.force1, w.force0, w.toggle) == (META, f1, f0, tg), option


def test_xt_connmark_targets():
    (w,), _ = only(rule("x", xt_connmark(0, ctmark=0x1bd10)))                 # --set-mark 0x1bd10
    assert (w.key, w.force1, w.bits) == (CT, 0x1bd10, ALL)
    (w,), _ = only(rule("x", xt_connmark(1, ctmask=0xff00, nfmask=0xff)))     # --save-mark
    assert (w.key, w.unknown, w.force0, w.copied) == (CT, 0xff, 0xff00, 0)
    (w,), _ = only(rule("x", xt_connmark(2)))                                 # --restore-mark
    assert (w.key, w.copied) == (META, ALL)
    shifted = X.xt("target", "CONNMARK", 2, struct.pack("=IIIBBBx", 0, ALL, ALL, 1, 8, 0))
    (w,), _ = only(rule("x", shifted))
    assert w.unknown == ALL


def test_xt_matches_and_comment():
    r = rule("x", comment("kube-router netpol - X"), xt_match("mark", 0x20000, 0x20000),
             verdict("accept"))
    assert rule_marks(r).reads == (Read(META, 0x20000, 0x20000),)
    assert comment_of(r) == "kube-router netpol - X"
    assert comment_of(rule("x", verdict("accept"), userdata=b"\0\x04nft\0")) == "nft"
    _, (r,) = only(rule("x", xt_match("connmark", 1, 3, invert=True)))
    assert r == Read(CT, 3, 1, negate=True)


def test_actions():
    assert rule_marks(rule("x", mark_test(1), verdict("jump", "KUBE-X"))).action == "jump KUBE-X"
    assert rule_marks(rule("x", mark_test(1), X.build("masq"))).action == "masquerade"
    assert rule_marks(rule("x", mark_test(1), X.xt("target", "REJECT", 0, b"\0" * 8))).action \
        == "reject"
    assert rule_marks(rule("x", set_mark(1))).action == "mark"


# --- owners --------------------------------------------------------------------------------

def owner(r: Rule) -> str:
    return owner_of(r, rule_marks(r))


def test_owners_from_one_table():
    assert owner(rule("FORWARD", IIF_WT0, verdict("accept"), userdata=b"frwacceptiif")) == "netbird"
    assert owner(rule("netbird-acl-forward-filter", verdict("accept"), table="netbird")) == "netbird"
    assert owner(rule("KUBE-ROUTER-FORWARD", verdict("accept"))) == "kube-router"   # not kube-proxy
    assert owner(rule("KUBE-MARK-MASQ", xt_mark(0x4000, 0x4000), table="nat")) == "kube-proxy"
    assert owner(rule("KUBE-FIREWALL", verdict("drop"))) == "kubelet"
    assert owner(rule("FORWARD", comment("kube-router netpol - TEMCG2JMHZYE7H7T"),
                      verdict("jump", "KUBE-ROUTER-FORWARD"))) == "kube-router"
    assert owner(rule("POSTROUTING", verdict("jump", "CNI-HOSTPORT-MASQ"), table="nat")) \
        == "cni-portmap"
    assert owner(rule("cali-PREROUTING", verdict("accept"), table="mangle")) == "calico"
    assert owner(rule("premangle", set_mark(0xca6c), table="wg-quick-wg0")) == "wg-quick"
    assert owner(rule("PREROUTING", comment("wg-quick(8) rule for wg0"), xt_connmark(2),
                      table="mangle")) == "wg-quick"
    assert owner(rule("FORWARD", verdict("accept"))) == "unknown"


def test_felix_rules_in_built_in_chains_are_calicos_by_their_hash_comment():
    """Felix appends to filter FORWARD an accept on its accept bit and a MARK setting it,
    each with only its `cali:<hash>` comment first (felix/rules/static.go
    StaticFilterForwardAppendRules, projectcalico/calico v3.32.1)."""
    assert owner(rule("FORWARD", comment("cali:cgbJbxznrMaPLjS3"),
                      comment("Policy explicitly accepted packet."),
                      xt_match("mark", 0x10000, 0x10000), verdict("accept"))) == "calico"
    assert owner(rule("FORWARD", comment("cali:r5b3w9LHJGgLUUAk"),
                      xt_mark(0x10000, 0x10000))) == "calico"
    assert owner(rule("PREROUTING", comment("cali:6gwbT8clXdHdC1b1"),
                      verdict("jump", "cali-PREROUTING"), table="raw")) == "calico"


# --- can a write change a test: the cube arithmetic against brute force -----------------

BITS = 5
_bits = st.integers(0, (1 << BITS) - 1)


@settings(max_examples=400, deadline=None)
@given(_bits, _bits, _bits, _bits, _bits, _bits, _bits, _bits, st.booleans())
def test_flips_match_brute_force(a, b, tg, unk, mask, value, cval, free, none):
    f1 = a & ~b & ~tg & ~unk
    f0 = b & ~a & ~tg & ~unk
    tg &= ~unk
    write = Write(META, f0, f1, tg, unk)
    c = value & mask
    read = Read(META, mask, None if none else c)
    cube = (cval & ~free, free)
    lost = gained = changed = False
    for v in range(1 << BITS):
        if (v ^ cube[0]) & ~cube[1] & ((1 << BITS) - 1):
            continue                                          # v not in the cube
        for u in range(1 << BITS):
            if u & ~unk:
                continue
            after = (v & ~(f0 | f1 | tg | unk)) | f1 | (~v & tg) | u
            before_eq, after_eq = (v & mask) == c, (after & mask) == c
            lost |= before_eq and not after_eq
            gained |= after_eq and not before_eq
            changed |= (v ^ after) & mask != 0
    expected = (changed, changed) if none else (lost, gained)
    assert flips(write, read, cube) == expected


# --- conflicts over snapshots ------------------------------------------------------------------

def netbird(masked: bool = False, family="ip"):
    """Netbird's chains as v0.70 writes them (client/firewall/nftables/acl_linux.go,
    router_linux.go): whole marks in mangle prerouting (0x1bd20 for redirected traffic,
    0x1bd21 to masquerade), exact tests in forward and nat postrouting. masked: the same
    with the mark kept to the low 12 bits (0xd20, 0xd21), written and tested under 0xfff."""
    def write(value):
        return mark_op(0xfffff000, value & 0xfff) if masked else set_mark(value)

    def test(value):
        return mark_test(value & 0xfff, 0xfff) if masked else mark_test(value)
    chains = [base("netbird-mangle-prerouting", C.NF_INET_PRE_ROUTING, -150),
              base("netbird-acl-forward-filter", C.NF_INET_FORWARD, 0),
              base("netbird-rt-postrouting", C.NF_INET_POST_ROUTING, 99), regular("netbird-rt-fwd")]
    rules = [rule("netbird-mangle-prerouting", IIF_WT0, write(0x1bd21)),
             rule("netbird-mangle-prerouting", IIF_WT0, write(0x1bd20)),
             rule("netbird-acl-forward-filter", test(0x1bd20), verdict("accept")),
             rule("netbird-acl-forward-filter", IIF_WT0, verdict("jump", "netbird-rt-fwd")),
             rule("netbird-acl-forward-filter", IIF_WT0, verdict("drop")),
             rule("netbird-rt-postrouting", test(0x1bd21), X.build("masq"))]
    return (family, "netbird", chains, rules)


def kube_router():
    """kube-router's pod firewall (pkg/controllers/netpol/pod.go) as iptables writes it."""
    pod = "KUBE-POD-FW-ABCDEFGHIJKLMNOP"
    chains = [base("FORWARD", C.NF_INET_FORWARD, 0), regular("KUBE-ROUTER-FORWARD"),
              regular("KUBE-NWPLCY-DEFAULT"), regular(pod)]
    rules = [rule("FORWARD", comment("kube-router netpol - TEMCG2JMHZYE7H7T"),
                  verdict("jump", "KUBE-ROUTER-FORWARD")),
             rule("KUBE-ROUTER-FORWARD", verdict("jump", pod)),
             rule("KUBE-ROUTER-FORWARD", xt_match("mark", 0x20000, 0x20000), verdict("accept")),
             rule("KUBE-NWPLCY-DEFAULT", xt_mark(0x10000, 0x10000)),
             rule(pod, verdict("jump", "KUBE-NWPLCY-DEFAULT")),
             rule(pod, mark_test(0x10000, 0x10000, C.CMP_NEQ), X.xt("target", "REJECT", 0, b"\0" * 8)),
             rule(pod, xt_mark(0, 0x10000)),
             rule(pod, xt_mark(0x20000, 0x20000))]
    return ("ip", "filter", chains, rules)


def kube_proxy_nat():
    """KUBE-MARK-MASQ and KUBE-POSTROUTING (kubernetes pkg/proxy/iptables/proxier.go)."""
    chains = [base("PREROUTING", C.NF_INET_PRE_ROUTING, -100), base("POSTROUTING", C.NF_INET_POST_ROUTING, 100),
              regular("KUBE-SERVICES"), regular("KUBE-MARK-MASQ"), regular("KUBE-POSTROUTING")]
    rules = [rule("PREROUTING", comment("kubernetes service portals"), verdict("jump", "KUBE-SERVICES")),
             rule("KUBE-SERVICES", verdict("jump", "KUBE-MARK-MASQ")),
             rule("KUBE-MARK-MASQ", xt_mark(0x4000, 0x4000)),
             rule("POSTROUTING", comment("kubernetes postrouting rules"), verdict("jump", "KUBE-POSTROUTING")),
             rule("KUBE-POSTROUTING", mark_test(0x4000, 0x4000, C.CMP_NEQ), verdict("return")),
             rule("KUBE-POSTROUTING", xt_mark(0x4000, 0)),
             rule("KUBE-POSTROUTING", X.xt("target", "MASQUERADE", 0, b"\0" * 24))]
    return ("ip", "nat", chains, [Rule("ip", "nat", r.chain, 0, 0, r.exprs) for r in rules])


def summary(conflicts) -> set[tuple]:
    return {(c.writer.owner, c.reader.owner, c.bits, c.effect, c.order) for c in conflicts}


def test_netbird_6022_kube_router_clears_and_sets_bits_netbird_tests_exactly():
    found = find_conflicts(snapshot(netbird(), kube_router()))
    assert ("kube-router", "netbird", 0x10000, "accept missed", TIE) in summary(found)
    assert ("kube-router", "netbird", 0x20000, "accept missed", TIE) in summary(found)
    c = next(c for c in found if c.bits == 0x20000)
    assert c.path == ("forward",)
    assert c.reader.rule.chain == "netbird-acl-forward-filter"
    assert c.effect == "accept missed"
    assert c.then.startswith("then drop by ip netbird netbird-acl-forward-filter handle ")
    # kube-router's set of 0x10000 leaves 0x1bd20 as it was: no conflict of its own
    assert not any(c.writer.rule.chain == "KUBE-NWPLCY-DEFAULT" and c.reader.owner == "netbird"
                   for c in found)
    # and Netbird's 0x1bd20 carries kube-router's "a policy matched" bit: its REJECT is
    # skipped — latent while kube-router's default chain sets that bit itself first
    assert ("netbird", "kube-router", 0x10000, "reject skipped", BEFORE) in summary(found)
    latent = next(c for c in found if c.effect == "reject skipped")
    assert latent.severity == "shared" and latent.why_shared.startswith("latent: kube-router")


def test_kube_proxy_or_mark_breaks_netbirds_exact_tests():
    found = find_conflicts(snapshot(netbird(), kube_proxy_nat()))
    got = {(c.writer.rule.chain, c.reader.rule.chain, c.effect, c.order, c.path) for c in found}
    assert ("KUBE-MARK-MASQ", "netbird-acl-forward-filter", "accept missed", BEFORE,
            ("prerouting", "forward")) in got
    assert ("KUBE-MARK-MASQ", "netbird-rt-postrouting", "masquerade skipped", BEFORE,
            ("prerouting", "forward", "postrouting")) in got
    # Netbird's 0x1bd20 on a fresh packet leaves 0x4000 at 0: kube-proxy's tests cannot change
    assert not [c for c in found if c.reader.owner == "kube-proxy"]


def tailscale(interface: bool = True):
    """Tailscale's subnet-route mark in ts-forward, as util/linuxfw/iptables_runner.go
    writes it: `-i tailscale0 -j MARK --set-mark 0x40000/0xff0000` (interface=False: the
    same rule for any interface, which no Tailscale writes)."""
    chains = [base("FORWARD", C.NF_INET_FORWARD, 0), regular("ts-forward")]
    only = [X.meta_load(C.META_IIFNAME), X.cmp(C.CMP_EQ, X.ifname_bytes("tailscale0", True))]
    rules = [rule("FORWARD", verdict("jump", "ts-forward")),
             rule("ts-forward", *(only if interface else []), xt_mark(0x40000, 0xff0000))]
    return ("ip", "filter", chains, rules)


def test_packets_that_can_never_meet_do_not_conflict():
    # Tailscale marks what comes in on tailscale0, Netbird what comes in on wt0: no packet
    # carries Netbird's 0x1bd20 into Tailscale's write.
    found = find_conflicts(snapshot(netbird(), tailscale()))
    assert not [c for c in found if c.writer.owner == "tailscale"], [conflict_text(c) for c in found]
    # The same write on every interface's traffic would rewrite bits 16-23 of 0x1bd20.
    found = find_conflicts(snapshot(netbird(), tailscale(interface=False)))
    assert ("tailscale", "netbird", 0xff0000, "accept missed", TIE) in summary(found)
    # And an interface in a rule is read as such.
    marks = rule_marks(tailscale()[3][1])
    assert (marks.iif, marks.oif) == ("tailscale0", None)


def test_disjoint_masked_bits_do_not_conflict():
    assert find_conflicts(snapshot(netbird(masked=True), kube_router(), kube_proxy_nat())) == ()


def test_a_write_that_leaves_the_tested_bits_alone_does_not_conflict():
    # clearing 0x10000, which nothing before sets, cannot change a test of it
    chains = [base("PREROUTING", C.NF_INET_PRE_ROUTING, 0), base("FORWARD", C.NF_INET_FORWARD, 0)]
    a = ("ip", "mangle", chains[:1], [rule("PREROUTING", xt_mark(0, 0x10000), table="mangle")])
    b = ("ip", "filter", chains[1:], [rule("FORWARD", mark_test(0x10000, 0x10000), verdict("accept"))])
    assert find_conflicts(snapshot(a, b)) == ()
    # setting it can
    a = ("ip", "mangle", chains[:1], [rule("PREROUTING", xt_mark(0x10000, 0x10000), table="mangle")])
    (c,) = find_conflicts(snapshot(a, b))
    assert (c.effect, c.writer.owner, c.reader.owner) == ("accepted unexpectedly", "unknown", "unknown")


def test_order_on_the_path():
    w = ("ip", "w", [base("fwd", C.NF_INET_FORWARD, 0)], [rule("fwd", set_mark(1), table="w")])
    for hook, priority, expected in [(C.NF_INET_PRE_ROUTING, 0, None),      # reader runs before
                                     (C.NF_INET_LOCAL_IN, 0, None),         # another path
                                     (C.NF_INET_FORWARD, -10, None),        # lower priority: first
                                     (C.NF_INET_FORWARD, 10, BEFORE),
                                     (C.NF_INET_FORWARD, 0, TIE),
                                     (C.NF_INET_POST_ROUTING, -300, BEFORE)]:
        r = ("ip", "r", [base("c", hook, priority)], [rule("c", mark_test(0), verdict("accept"), table="r")])
        found = find_conflicts(snapshot(w, r))
        assert (found[0].order if found else None) == expected, (hook, priority)


def test_rule_order_within_one_base_chain():
    chains = [base("FORWARD", C.NF_INET_FORWARD, 0), regular("KUBE-X"), regular("DOCKER-Y")]
    write = rule("KUBE-X", xt_mark(0x4000, 0x4000))
    read = rule("DOCKER-Y", mark_test(0x4000, 0x4000), verdict("drop"))
    before = [rule("FORWARD", verdict("jump", "KUBE-X")), rule("FORWARD", verdict("jump", "DOCKER-Y"))]
    assert find_conflicts(snapshot(("ip", "filter", chains, before + [write, read])))
    after = list(reversed(before))
    assert not find_conflicts(snapshot(("ip", "filter", chains, after + [write, read])))


def test_ct_mark_reaches_later_packets_and_families_must_meet():
    w = ("ip", "netbird", [base("post", C.NF_INET_POST_ROUTING, -150)],
         [rule("post", set_mark(0x1bd11, ct=True), table="netbird")])
    r = ("inet", "other", [base("pre", C.NF_INET_PRE_ROUTING, -300)],
         [rule("pre", mark_test(0x10000, 0x10000, ct=True), verdict("accept"), family="inet",
               table="other")])
    (c,) = find_conflicts(snapshot(w, r))
    assert (c.key, c.order, c.path) == (CT, LATER_PACKETS, ("postrouting", "prerouting"))
    r6 = ("ip6", "other", r[2], [Rule("ip6", "other", x.chain, 0, 0, x.exprs) for x in r[3]])
    assert find_conflicts(snapshot(w, r6)) == ()


def test_kube_proxy_return_names_the_masquerade_it_skips():
    # someone ORs 0x4000 in forward: kube-proxy's KUBE-POSTROUTING no longer returns early
    w = ("ip", "mangle", [base("FORWARD", C.NF_INET_FORWARD, -150)],
         [rule("FORWARD", xt_mark(0x4000, 0x4000), table="mangle")])
    found = find_conflicts(snapshot(w, kube_proxy_nat()))
    (c,) = [c for c in found if c.reader.rule.chain == "KUBE-POSTROUTING"]
    assert c.effect == "return missed"
    w = ("ip", "mangle", [base("FORWARD", C.NF_INET_FORWARD, -150)],
         [rule("FORWARD", xt_mark(0, 0x4000), table="mangle")])
    (c,) = [c for c in find_conflicts(snapshot(w, kube_proxy_nat()))
            if c.reader.rule.chain == "KUBE-POSTROUTING"]
    assert c.effect == "returns early"
    assert c.then.startswith("skipping masquerade by ip nat KUBE-POSTROUTING handle ")


def test_legacy_kube_firewall_drops_what_netbird_marks():
    # kubelet's KUBE-FIREWALL (pkg/kubelet/kubelet_network_linux.go, before
    # IPTablesOwnershipCleanup): DROP what carries 0x8000; 0x1bd20 carries it.
    chains = [base("INPUT", C.NF_INET_LOCAL_IN, 0), regular("KUBE-FIREWALL")]
    kubelet = ("ip", "filter", chains, [
        rule("INPUT", verdict("jump", "KUBE-FIREWALL")),
        rule("KUBE-FIREWALL", comment("kubernetes firewall for dropping marked packets"),
             xt_match("mark", 0x8000, 0x8000), verdict("drop"))])
    found = [c for c in find_conflicts(snapshot(netbird(), kubelet)) if c.reader.owner == "kubelet"]
    # both of Netbird's prerouting marks, 0x1bd20 and 0x1bd21, carry the bit
    assert sorted(c.writer.what for c in found) == ["meta mark set 0x1bd20", "meta mark set 0x1bd21"]
    assert {(c.bits, c.effect, c.path) for c in found} == {(0x8000, "dropped", ("prerouting", "input"))}


def test_wg_quick_restore_ties_with_netbirds_mangle_prerouting():
    # wg-quick (src/wg-quick/linux.bash): premangle, prerouting priority -150 like Netbird's
    # mangle chain: `meta l4proto udp meta mark set ct mark`.
    wg = ("ip", "wg-quick-wg0", [base("premangle", C.NF_INET_PRE_ROUTING, -150)],
          [rule("premangle", X.ct_load(C.CT_MARK), X.build("meta", key=C.META_MARK, sreg=1),
                table="wg-quick-wg0")])
    found = find_conflicts(snapshot(netbird(), wg))
    c = next(c for c in found if c.writer.owner == "wg-quick"
             and c.reader.rule.chain == "netbird-acl-forward-filter")
    # the connection's mark only ever holds 0 here: restoring it cannot make 0x1bd20
    assert (c.effect, c.order, c.writer.what) == ("accept missed", BEFORE,
                                                   "meta mark: copy ct mark into bits 0xffffffff")


def test_same_component_and_unclaimed_rules_in_one_table_do_not_conflict():
    chains = [base("pre", C.NF_INET_PRE_ROUTING, 0), base("fwd", C.NF_INET_FORWARD, 0)]
    t = ("ip", "mine", chains, [rule("pre", set_mark(7), table="mine"),
                                rule("fwd", mark_test(1), verdict("accept"), table="mine")])
    assert find_conflicts(snapshot(t)) == ()


def test_verdict_maps_reach_chains_nothing_jumps_to():
    chains = [base("fwd", C.NF_INET_FORWARD, 10), regular("by-map")]
    t = ("ip", "t", chains, [rule("fwd", X.meta_load(C.META_L4PROTO),
                                  X.build("lookup", set="vm", sreg=1, dreg=0), table="t"),
                             rule("by-map", mark_test(1), verdict("accept"), table="t")])
    w = ("ip", "w", [base("pre", C.NF_INET_PRE_ROUTING, 0)], [rule("pre", set_mark(1), table="w")])
    (c,) = find_conflicts(snapshot(t, w))
    assert c.reader.rule.chain == "by-map"


def test_json_and_text():
    found = find_conflicts(snapshot(netbird(), kube_router()))
    doc = conflicts_json(found)
    c = next(x for x in doc["conflicts"] if x["bits"] == "0x20000")
    assert c["writer"] | {"handle": 0} == {
        "family": "ip", "table": "filter", "chain": "KUBE-POD-FW-ABCDEFGHIJKLMNOP", "handle": 0,
        "owner": "kube-router", "userdata": None, "hook": "forward", "priority": 0,
        "base_chain": "FORWARD", "does": "meta mark: set bits 0x20000", "similar": 0,
        "kind": "nftables", "source": None}
    assert c["reader"]["does"] == "meta mark == 0x1bd20 → accept"
    assert (c["path"], c["order"], c["mark"]) == (["forward"], "tie", "meta mark")
    assert conflict_json(harms(found)[0]) == doc["conflicts"][0]
    line = conflict_text(next(x for x in found if x.bits == 0x20000))
    assert line.startswith("meta mark 0x20000: kube-router ip filter KUBE-POD-FW-")
    assert "→ netbird ip netbird netbird-acl-forward-filter handle" in line
    assert "accept missed" in line and "whichever registered last runs first" in line


def test_similar_rules_count_once():
    t = kube_router()
    pods = [f"KUBE-POD-FW-{i:016d}" for i in range(50)]
    chains = t[2] + [regular(p) for p in pods]
    rules = t[3] + [rule("KUBE-ROUTER-FORWARD", verdict("jump", p)) for p in pods] + \
        [rule(p, xt_mark(0x20000, 0x20000)) for p in pods]
    found = find_conflicts(snapshot(netbird(), ("ip", "filter", chains, rules)))
    (c,) = [c for c in found if c.bits == 0x20000 and c.reader.rule.chain.endswith("forward-filter")]
    assert c.writer.similar == 50


def test_a_lean_snapshot_is_refused():
    lean = Snapshot(1, {TableRef("ip", "filter"): Table("ip", "filter", rules_digest=b"x")})
    with pytest.raises(ValueError, match="lean snapshot"):
        find_conflicts(lean)


def test_pure_modules_do_no_io():
    banned = {"socket", "subprocess", "pyroute2", "pystemd", "yaml"}
    for path in (pathlib.Path(__file__).parents[2] / "fwgate" / "marks").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                assert name.split(".")[0] not in banned, (path, name)
                assert "adapters" not in name, (path, name)
    # nor through what they import
    import subprocess
    loaded = subprocess.run([sys.executable, "-c", "import sys, fwgate.marks; print(*sys.modules)"],
                            capture_output=True, text=True, check=True).stdout.split()
    assert not [m for m in loaded if m.split(".")[0] in banned or m.startswith("fwgate.adapters")]
