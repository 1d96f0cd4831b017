"""The analyser on hand-built rules: what iptables-nft 1.8.9 fails on, ignores, or misreads.

Every expected message here was seen from the real binary (see
tests/netns/test_compat_corpus.py, which checks the same model against it)."""
from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from fwgate.netlink import consts as C
from fwgate.netlink import exprs as X
from fwgate import programmer as P
from fwgate.netlink.attrs import attr, attr_str, attr_u32, attr_u64, nested
from fwgate.compat.parser import read_rule
from fwgate.compat.reader import (
    BREAKS_CHECK, BREAKS_LIST, BREAKS_SAVE, ChainRef, analyse, managed_tables,
)
from fwgate.model import TableRef
from fwgate.report import report_json
from fwgate.model import Expr, Rule
from fwgate_testing.compat_rules import (  # noqa: F401
    ACCEPT, EST_REL, ZERO, ct_state, l4proto, oifname, payload_cmp, raw, rule, snap,
)

def errors(r: Rule) -> list[str]:
    return [msg for _, msg in read_rule(r).errors]


# --- which tables -------------------------------------------------------------------

def test_managed_tables_are_iptables_names_or_hold_xt_expressions():
    xt_rule = rule(X.xt("match", "comment", 0, b"\0" * 256), family="ip", table="custom")
    s = snap(xt_rule, extra_tables=[
        TableRef("ip", "filter"), TableRef("ip6", "mangle"), TableRef("ip", "netbird"),
        TableRef("arp", "filter"), TableRef("arp", "nat"), TableRef("bridge", "broute"),
        TableRef("inet", "filter"), TableRef("ip6", "security")])
    assert managed_tables(s) == [
        TableRef("arp", "filter"), TableRef("bridge", "broute"), TableRef("ip", "custom"),
        TableRef("ip", "filter"), TableRef("ip6", "mangle"), TableRef("ip6", "security")]


def test_rules_outside_managed_tables_are_not_judged():
    netbird = rule(*ct_state(1), *ACCEPT, table="netbird")
    assert analyse(snap(netbird)).ok


# --- Netbird's rules ------------------------------------------------------------------

def test_netbird_frwacceptoif_fails_to_parse():
    r = rule(*P.forward_oif_rule("wt0"), userdata=P.TAG_FORWARD_OIF)
    report = analyse(snap(r))
    (f,) = report.findings
    assert f.reason == "ct state expression: iptables-nft cannot parse it (cmp sreg undef)"
    assert f.iptables_error == "cmp sreg undef" and f.unlisted == "ct expression"
    assert f.breaks == (BREAKS_CHECK, BREAKS_LIST, BREAKS_SAVE)
    assert f.repairable
    assert not report.ok
    assert report.unlistable_chains == (ChainRef("ip", "filter", "FORWARD"),)


def test_netbird_iif_rules_are_fine():
    for tag, chain in ((P.TAG_FORWARD_IIF, "FORWARD"), (P.TAG_INPUT, "INPUT")):
        report = analyse(snap(rule(*P.iif_accept_rule("wt0"), userdata=tag, chain=chain)))
        assert report.ok and not report.misread and report.unlistable_chains == ()


# --- registers ------------------------------------------------------------------------

def test_ct_in_any_128_bit_register_leaves_the_cmp_undefined():
    for reg in (1, 2, 3, 4, 8, 10, 11):  # 8 is dumped as 1 by the kernel: same thing
        assert errors(rule(*ct_state(reg), *ACCEPT)) == ["cmp sreg undef"], reg


def test_ct_in_reg32_01_is_misread_as_the_oifname_in_reg_1():
    """iptables maps NFT_REG32_01 onto its slot for reg 1: no error, a wrong rule."""
    v = read_rule(rule(*oifname(1), *ct_state(9), *ACCEPT))
    assert v.errors == ()
    assert v.misread[0][0] == 2  # the ct expression is the culprit
    assert v.unlisted == ((2, "ct expression"),)


def test_ct_in_reg32_05_is_misread_as_the_oifname_in_reg_2():
    v = read_rule(rule(*oifname(2), *ct_state(13), *ACCEPT))
    assert v.errors == () and v.misread and v.misread[0][0] == 2


def test_load_over_a_pending_load_is_misread():
    v = read_rule(rule(X.meta_load(C.META_OIFNAME, 1), X.ct_load(C.CT_STATE, 1),
                       X.cmp(C.CMP_NEQ, ZERO, 1), *ACCEPT))
    assert v.errors == () and v.misread[0][0] == 1


def test_reg32_02_is_not_reg_1_to_iptables():
    """Only NFT_REG32_01 lands on reg 1's slot; NFT_REG32_02 has a slot of its own."""
    assert errors(rule(*oifname(1), *ct_state(10), *ACCEPT)) == ["cmp sreg undef"]


def test_aligned_32_bit_registers_are_the_128_bit_ones():
    """The kernel dumps NFT_REG32_00/04/08/12 as registers 1..4."""
    for load, cmp in ((8, 1), (12, 2), (16, 3), (20, 4), (1, 8)):
        r = rule(X.meta_load(C.META_OIFNAME, load), X.cmp(C.CMP_EQ, b"wt0\0", cmp), *ACCEPT)
        assert errors(r) == [] and not read_rule(r).misread, (load, cmp)


def test_32_bit_registers_are_fine_when_nothing_else_is_skipped():
    for reg in (8, 9, 12, 17):
        r = rule(*oifname(reg, padded=False), *ACCEPT)
        assert read_rule(r) == read_rule(rule(*ACCEPT)), reg


def test_aliased_loads_it_understands_are_misread_too():
    """oifname fills reg 1 (four words); a payload load into NFT_REG32_01 overwrites
    its second word, but iptables thinks it replaced all of reg 1."""
    r = rule(X.meta_load(C.META_OIFNAME, 1), X.payload_load(1, 12, 4, 9),
             X.cmp(C.CMP_EQ, b"wt0\0", 1), *ACCEPT)
    v = read_rule(r)
    assert v.errors == () and [(m.index, m.kind) for m in v.misread] == [(2, "aliased")]
    assert "mixes up registers" in v.misread[0].what


def test_a_map_lookup_leaves_its_result_undefined_to_iptables():
    r = rule(X.payload_load(1, 12, 4), X.build("lookup", set="m", sreg=1, dreg=2), X.cmp(C.CMP_EQ, ZERO, 2), *ACCEPT)
    f = analyse(snap(r)).findings[0]
    assert f.reason == "lookup expression: iptables-nft cannot parse it (cmp sreg undef)"


def test_bitwise_copies_what_iptables_knows_about_a_register():
    r = rule(X.meta_load(C.META_OIFNAME, 1), X.bitwise(1, 2, b"\xff" * 4, ZERO),
             X.cmp(C.CMP_EQ, b"wt0\0", 2), *ACCEPT)
    assert read_rule(r).errors == () and read_rule(r).misread == ()


def test_cmp_on_an_immediate_register():
    r = rule(X.immediate_data(EST_REL, 1), X.cmp(C.CMP_EQ, EST_REL, 1), *ACCEPT)
    assert errors(r) == ["cmp sreg has unknown type"]


def test_skipped_expression_without_a_cmp_only_breaks_listing():
    f = analyse(snap(rule(X.ct_load(C.CT_STATE, 1), *ACCEPT))).findings[0]
    assert f.iptables_error is None and f.breaks == (BREAKS_LIST, BREAKS_SAVE)
    assert "-C still works" in f.reason


# --- meta and header fields ----------------------------------------------------------------

def test_meta_keys_without_an_iptables_equivalent():
    skuid = [X.meta_load(10), X.cmp(C.CMP_EQ, ZERO)]
    assert errors(rule(*skuid, *ACCEPT)) == ["unknown ipv4 meta key"]
    assert errors(rule(*skuid, *ACCEPT, family="ip6")) == ["unknown ipv6 meta key"]
    r = analyse(snap(rule(*skuid, *ACCEPT))).findings[0]
    assert r.reason == "meta skuid expression: iptables-nft cannot parse it (unknown ipv4 meta key)"
    for key in (3, 4, 5, 6, 7, 16, 19):  # mark iif oif iifname oifname l4proto pkttype
        assert errors(rule(X.meta_load(key), X.cmp(C.CMP_EQ, ZERO), *ACCEPT)) == [], key


def test_meta_set():
    trace_on = [X.immediate_data(b"\x01\0\0\0", 1), raw("meta", attr_u32(2, 12), attr_u32(3, 1))]
    trace_off = [X.immediate_data(ZERO, 1), raw("meta", attr_u32(2, 12), attr_u32(3, 1))]
    mark = [X.immediate_data(b"\x01\0\0\0", 1), raw("meta", attr_u32(2, 3), attr_u32(3, 1))]
    assert errors(rule(*trace_on)) == []
    assert errors(rule(*trace_off)) == ["trace is cleared"]
    assert errors(rule(*mark)) == ["meta sreg key not supported"]


def test_ipv4_header_fields():
    net = 1
    ok = [(12, 4), (16, 4), (9, 1), (6, 2), (12, 1)]
    for offset, length in ok:
        assert errors(rule(*payload_cmp(net, offset, length, b"\x01" * length), *ACCEPT)) == []
    assert errors(rule(*payload_cmp(net, 2, 2, b"\0d"), *ACCEPT)) == ["unknown payload offset"]
    assert errors(rule(*payload_cmp(net, 8, 1, b"\x05"), *ACCEPT)) == []            # ttl
    assert errors(rule(*payload_cmp(net, 8, 1, b"\xff", op=3), *ACCEPT)) == ["invalid ttl field match"]


def test_ipv6_header_fields():
    r = rule(*payload_cmp(1, 6, 1, b"\x06"), *ACCEPT, family="ip6")   # nexthdr: 1.8.9's fall-through
    v = read_rule(r)
    assert v.errors == () and "hop-limit" in v.misread[0][1]
    assert errors(rule(*payload_cmp(1, 0, 4, ZERO), *ACCEPT, family="ip6")) == ["unknown payload offset"]
    assert errors(rule(*payload_cmp(1, 8, 16, b"\0" * 16), *ACCEPT, family="ip6")) == []


def test_transport_header_needs_a_protocol_iptables_knows():
    dport = payload_cmp(2, 2, 2, b"\0\x35")
    assert errors(rule(*dport, *ACCEPT)) == ["unsupported layer 4 protocol value"]
    assert errors(rule(*l4proto(17), *dport, *ACCEPT)) == []
    assert errors(rule(*l4proto(1), *payload_cmp(2, 0, 1, b"\x08"), *ACCEPT)) == []
    icmp6_code = [*l4proto(58), *payload_cmp(2, 1, 1, b"\x03")]
    assert errors(rule(*icmp6_code, *ACCEPT, family="ip6")) == \
        ["icmp6 code with any type match not supported"]
    seq = [*l4proto(6), *payload_cmp(2, 4, 4, ZERO)]
    assert read_rule(rule(*seq, *ACCEPT)).misread  # tcp sequence number: silently dropped


def test_ranges():
    def rng(base, offset):
        return [X.payload_load(base, offset, 2), raw("range", attr_u32(1, 1), attr_u32(2, 1),
                nested(3, attr(1, b"\x03\xe8")), nested(4, attr(1, b"\x07\xd0")))]
    assert errors(rule(*l4proto(6), *rng(2, 2), *ACCEPT)) == []
    assert errors(rule(*rng(1, 12), *ACCEPT)) == ["range with unknown payload base"]
    assert errors(rule(X.meta_load(3), *rng(2, 2)[1:], *ACCEPT)) == ["range sreg type unsupported"]


# --- expressions iptables lists, or not ------------------------------------------------------

def test_expressions_outside_the_listing_list():
    limit_bytes = raw("limit", attr_u64(1, 10), attr_u64(2, 1), attr_u32(3, 0), attr_u32(4, 1),
                      attr_u32(5, 0))
    limit_pkts = raw("limit", attr_u64(1, 10), attr_u64(2, 1), attr_u32(3, 5), attr_u32(4, 0),
                     attr_u32(5, 0))
    log_plain = raw("log", attr_str(2, "x "))
    log_group = raw("log", struct.pack("=HH", 6, 1) + b"\0\x01\0\0")
    reject = raw("reject", attr_u32(1, 0), attr(2, b"\x03"))
    assert read_rule(rule(limit_pkts, *ACCEPT)) == read_rule(rule(*ACCEPT))
    assert read_rule(rule(log_group)).unlisted == ()
    for e, what in ((limit_bytes, "limit expression (a byte rate or `over`)"),
                    (log_plain, "log expression without an nflog group"),
                    (reject, "reject expression")):
        v = read_rule(rule(e))
        assert v.unlisted == ((0, what),) and v.errors == ()


def test_set_lookups_are_ignored_not_fatal():
    r = rule(X.payload_load(1, 12, 4), X.lookup("allowed"), *ACCEPT)
    report = analyse(snap(r))
    assert report.ok and report.unlistable_chains == ()
    assert report.misread[0].reason == ("lookup expression: iptables-nft ignores the set lookup "
                                        "and shows the rule without it")


def test_verdicts_iptables_does_not_show():
    # continue: shown without a target, which is where a rule without one goes anyway
    assert not read_rule(rule(X.counter(), X.verdict(-1))).misread
    assert read_rule(rule(X.counter(), X.verdict(3))).misread  # NF_QUEUE: no target shown
    assert not read_rule(rule(X.verdict(-3, "X"))).misread


# --- bad data never crashes ------------------------------------------------------------------

def test_malformed_expression_is_reported_unreadable():
    broken = Expr("cmp", b"\x08\x00\x01\x00\x00")          # truncated attribute
    report = analyse(snap(rule(*oifname(), broken, *ACCEPT)))
    (f,) = report.findings
    assert "expression 2 (cmp): unreadable" in f.reason and not f.repairable
    assert report.listing_exit("ip", "filter", "FORWARD") is None


def test_missing_attributes_read_as_zero_like_libnftnl():
    # a cmp without its register attribute reads register 0, which nothing loaded
    assert errors(rule(Expr("cmp", b""), *ACCEPT)) == ["cmp sreg undef"]
    assert read_rule(rule(Expr("", b""))).unreadable


EXPRESSIONS = st.sampled_from([
    X.meta_load(7, 1), X.meta_load(16, 9), X.meta_load(10, 2), X.ct_load(0, 1), X.ct_load(0, 10),
    X.payload_load(1, 12, 4), X.payload_load(2, 2, 2, 2), X.payload_load(0, 6, 6),
    X.cmp(0, b"wt0\0", 1), X.cmp(1, ZERO, 2), X.cmp(0, b"\x06", 9), X.cmp(3, b"\xff", 1),
    X.bitwise(1, 1, EST_REL, ZERO), X.bitwise(1, 2, EST_REL, ZERO), X.bitwise(9, 10, b"\xff", b"\0"),
    X.lookup("s", 1), X.counter(), X.verdict(1), X.verdict(-1), X.immediate_data(b"\x01", 1),
    X.immediate_data(b"\x01" * 20, 2), X.xt("match", "conntrack", 3, b"\0" * 168),
    X.meta_load(4, 1), X.meta_load(1, 1), X.payload_load(2, 13, 1), X.cmp(2, b"\0\x16", 1),
    raw("range", attr_u32(1, 1), attr_u32(2, 0), nested(3, attr(1, b"\0\x01")),
        nested(4, attr(1, b"\0\x09"))),
    raw("fib", attr_u32(1, 1), attr_u32(2, 1), attr_u32(3, 4)),
    raw("meta", attr_u32(2, 12), attr_u32(3, 1)),
    raw("lookup", attr_str(1, "m"), attr_u32(2, 1), attr_u32(3, 9)),
    raw("payload", attr_u32(5, 1), attr_u32(2, 1), attr_u32(3, 8), attr_u32(4, 1)),
    raw("limit", attr_u64(1, 1), attr_u64(2, 1), attr_u32(4, 1)),
])


@settings(max_examples=300, deadline=None)
@given(st.lists(EXPRESSIONS, max_size=8), st.sampled_from(["ip", "ip6", "arp", "bridge"]))
def test_any_expression_list_gets_a_consistent_verdict(exprs, family):
    r = rule(*exprs, family=family)
    assert read_rule(r).unreadable is None  # well-formed data never trips the model itself
    report = analyse(snap(r))
    for f in report.findings:
        assert f.reason and f.breaks and f.versions
    assert len(report.findings) <= 1  # one per rule, whatever the versions say
    assert report.ok == (report.listing_exit(family, "filter", "FORWARD") == 0)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["meta", "cmp", "ct", "bitwise", "payload", "immediate", "lookup", "range",
                        "limit", "log", "match", "fib", "nonsense"]), st.binary(max_size=40))
def test_arbitrary_bytes_never_crash(name, data):
    report = analyse(snap(rule(Expr(name, data), *ACCEPT)))
    assert all(f.reason for f in report.findings)


# --- report helpers and JSON -------------------------------------------------------------------

def test_check_blocker_and_listing_predictions():
    bad = rule(*ct_state(1), *ACCEPT, handle=5, position=0)
    unlisted = rule(raw("reject", attr_u32(1, 0)), handle=7, position=2)
    kr = rule(X.xt("match", "comment", 0, b"\0" * 256), X.counter(), X.verdict(-3, "KR"),
              handle=6, position=1)
    report = analyse(snap(bad, kr, unlisted))
    assert report.check_blocker("ip", "filter", "FORWARD", 1).rule.handle == 5
    assert report.check_blocker("ip", "filter", "FORWARD", 0) is None
    assert report.check_blocker("ip", "filter", "INPUT") is None
    assert report.listing_exit("ip", "filter", "FORWARD") == 1   # the expression check runs first
    assert report.listing_exit("ip", "filter", "INPUT") == 0
    assert report.save_outcome("ip", "filter") == "left out"
    only_parse = analyse(snap(rule(*payload_cmp(1, 2, 2, b"\0d"), *ACCEPT)))
    assert only_parse.listing_exit("ip", "filter", "FORWARD") == 3
    assert only_parse.save_outcome("ip", "filter") == "aborted"
    assert only_parse.unsaveable_tables == (TableRef("ip", "filter"),)


def test_report_json_has_design_shape():
    r = rule(*P.forward_oif_rule("wt0"), userdata=P.TAG_FORWARD_OIF, handle=11, position=0)
    out = report_json(analyse(snap(r)))
    assert out["ok"] is False
    assert out["managed_tables"] == [{"family": "ip", "table": "filter"}]
    (entry,) = out["incompatible"]
    assert {k: entry[k] for k in ("family", "table", "chain", "handle", "position", "userdata",
                                  "expressions", "repairable")} == {
        "family": "ip", "table": "filter", "chain": "FORWARD", "handle": 11, "position": 0,
        "userdata": "frwacceptoif",
        "expressions": ["meta", "cmp", "ct", "bitwise", "cmp", "counter", "immediate"],
        "repairable": True}
    assert entry["reason"].endswith("iptables-nft cannot parse it (cmp sreg undef)")
    assert entry["equivalent"] == "-o wt0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
    assert out["unlistable_chains"] == [{"family": "ip", "table": "filter", "chain": "FORWARD"}]
    assert out["misread"] == []


# --- issue 21: what the differential test found (tests/netns/test_compat_generated.py
# holds the same against the real binaries) ----------------------------------------------

from fwgate.compat.reader import judge_rule  # noqa: E402


def _l4(proto: int) -> list[bytes]:
    return [X.meta_load(C.META_L4PROTO, 1), X.cmp(C.CMP_EQ, bytes([proto]), 1)]


def _th(offset: int, length: int, op: int, data: bytes, mask: bytes | None = None) -> list[bytes]:
    out = [X.payload_load(C.PAYLOAD_TRANSPORT, offset, length, 1)]
    if mask is not None:
        out.append(X.bitwise(1, 1, mask, b"\0" * len(mask)))
    return out + [X.cmp(op, data, 1)]


def test_tcp_flags_without_a_mask_crash_listing_not_check():
    from fwgate.compat.parser import TCP_FLAGS_CRASH
    from fwgate.compat.reader import BREAKS_CHECK
    for data in (b"\x02", b"\x00", b"\x12"):
        v = read_rule(rule(*_l4(6), *_th(13, 1, C.CMP_EQ, data), *ACCEPT))
        assert v.crash and v.crash[1] == TCP_FLAGS_CRASH and not v.errors
        bad, _ = judge_rule(rule(*_l4(6), *_th(13, 1, C.CMP_NEQ, data), *ACCEPT))
        assert bad.blocking and BREAKS_CHECK not in bad.breaks   # -S FORWARD dies, -C works
    # a mask without ECE/CWR prints fine
    assert read_rule(rule(*_l4(6), *_th(13, 1, C.CMP_EQ, b"\x02", b"\x12"), *ACCEPT)).clean
    # the last flags test is the one printed
    assert read_rule(rule(*_l4(6), *_th(13, 1, C.CMP_EQ, b"\x02"),
                          *_th(13, 1, C.CMP_EQ, b"\x02", b"\x12"), *ACCEPT)).crash is None


def test_icmp_tests_iptables_reads_as_something_else():
    kinds = lambda v: {m.kind for m in v.misread}  # noqa: E731
    assert kinds(read_rule(rule(*_l4(1), *_th(0, 1, C.CMP_NEQ, b"\x08"), *ACCEPT))) == {"icmp"}
    assert kinds(read_rule(rule(*_l4(1), *_th(0, 1, C.CMP_GT, b"\x03"), *ACCEPT))) == {"icmp"}
    assert kinds(read_rule(rule(*_l4(1), *_th(0, 1, C.CMP_EQ, b"\xff"), *ACCEPT))) == {"icmp-any"}
    assert kinds(read_rule(rule(*_l4(1), *_th(1, 1, C.CMP_EQ, b"\x03"), *ACCEPT))) == {"icmp-any"}
    assert read_rule(rule(*_l4(1), *_th(0, 1, C.CMP_EQ, b"\x08"), *ACCEPT)).clean
    # the code a type+code test pins is not lost
    assert read_rule(rule(*_l4(1), *_th(0, 2, C.CMP_EQ, b"\x03\x00"),
                          *_th(1, 1, C.CMP_EQ, b"\x00"), *ACCEPT)).clean


def test_masks_iptables_drops_and_restores_it_refuses():
    kinds = lambda v: {m.kind for m in v.misread}  # noqa: E731
    assert kinds(read_rule(rule(*_l4(6), *_th(2, 2, C.CMP_EQ, b"\x01\x00", b"\xff\x00"),
                                *ACCEPT))) == {"mask"}
    # -p 47 with a tcp port test: "TCP match requires '-p tcp'"
    r = rule(*_l4(6), *_th(2, 2, C.CMP_EQ, b"\x00\x16"),
             X.payload_load(C.PAYLOAD_NETWORK, 9, 1, 1), X.cmp(C.CMP_EQ, b"\x2f", 1), *ACCEPT)
    assert "refused" in kinds(read_rule(r))
    # two bounds that make min > max
    r = rule(*_l4(6), *_th(2, 2, C.CMP_GT, b"\x04\x00"), *_th(2, 2, C.CMP_LT, b"\x00\x50"), *ACCEPT)
    assert "refused" in kinds(read_rule(r))
    r = rule(*_l4(6), *_th(2, 2, C.CMP_GT, b"\x04\x00"), *_th(2, 2, C.CMP_LT, b"\x07\xd0"), *ACCEPT)
    assert read_rule(r).clean
    # -i in OUTPUT
    r = rule(X.meta_load(C.META_IIFNAME, 1), X.cmp(C.CMP_EQ, X.ifname_bytes("eth0", True), 1),
             *ACCEPT, chain="OUTPUT")
    assert kinds(read_rule(r)) == {"refused"}
    bad, wrong = judge_rule(r)
    assert "every sync fails" in wrong.after_sync
