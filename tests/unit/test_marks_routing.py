"""Marks outside nf_tables: the netlink decoders on bytes laid out as the kernel's uapi
headers say, and the dataflow with marked sockets and routing rules.

tests/netns/test_marks_outside.py reads the same from the real kernel and proves the
harms with packets."""
from __future__ import annotations

import struct

from fwgate_testing.mark_rules import (
    base, comment, mark_test, regular, rule, set_mark, snapshot, verdict, xt_mark, xt_match,
)

from fwgate.marks import conflict_json, conflict_text, find_conflicts, harms
from fwgate.marks.model import ALL
from fwgate.model import Chain
from fwgate.marks.routing import (
    Outside, RouteRule, SocketMark, route_rules, rule_owner, socket_marks, socket_owner,
)
from fwgate.netlink import consts as C
from fwgate.netlink import exprs as X
from fwgate.netlink import route as R


def nla(kind: int, payload: bytes) -> bytes:
    """A netlink attribute, padded, written out here rather than with the codec."""
    head = struct.pack("=HH", 4 + len(payload), kind)
    return head + payload + b"\0" * (-(4 + len(payload)) % 4)


# --- decoders ------------------------------------------------------------------------

def test_a_wireguard_device_answer_decodes_its_fwmark():
    # include/uapi/linux/wireguard.h: genlmsghdr {u8 cmd, u8 version, u16 reserved}, then
    # WGDEVICE_A_IFINDEX (1, u32), _IFNAME (2, string), _PRIVATE_KEY (3, 32 bytes),
    # _PUBLIC_KEY (4), _FLAGS (5, u32), _LISTEN_PORT (6, u16), _FWMARK (7, u32),
    # _PEERS (8, nested) — in the order the kernel's wg_get_device_dump puts them.
    peer = nla(1 | 0x8000, nla(1, b"\x11" * 32))
    body = struct.pack("=BBH", 0, 1, 0) + nla(6, struct.pack("=H", 51820)) + \
        nla(7, struct.pack("=I", 0xCA6C)) + nla(3, b"\x01" * 32) + nla(4, b"\x02" * 32) + \
        nla(1, struct.pack("=I", 7)) + nla(2, b"wg0\0") + nla(8 | 0x8000, peer)
    assert R.decode_wg_device(body) == R.WgDevice("wg0", 0xCA6C, 51820)
    # a device without a fwmark leaves the attribute out (or sends 0)
    bare = struct.pack("=BBH", 0, 1, 0) + nla(2, b"wt0\0") + nla(6, struct.pack("=H", 51820))
    assert R.decode_wg_device(bare).fwmark == 0


def test_the_wireguard_requests_are_laid_out_as_the_header_says():
    msg = R.wg_device_request(0x1A, "wg0", seq=5)
    length, mtype, flags, seq, _ = struct.unpack_from("=IHHII", msg)
    assert (length, mtype, flags & C.NLM_F_DUMP, seq) == (len(msg), 0x1A, C.NLM_F_DUMP, 5)
    assert msg[16:20] == bytes([R.WG_CMD_GET_DEVICE, R.WG_GENL_VERSION, 0, 0])
    assert msg[20:] == nla(2, b"wg0\0")
    setter = R.wg_set_fwmark_request(0x1A, "wg0", 0xCA6C, seq=6)
    assert setter[16] == R.WG_CMD_SET_DEVICE and nla(7, struct.pack("=I", 0xCA6C)) in setter
    family = R.family_request("wireguard", seq=1)
    assert struct.unpack_from("=H", family, 4)[0] == R.GENL_ID_CTRL
    assert R.decode_family_id(struct.pack("=BBH", 1, 2, 0) + nla(2, b"wireguard\0")
                              + nla(1, struct.pack("=H", 0x1A))) == 0x1A


def test_routing_rules_decode_marks_masks_and_not():
    # include/uapi/linux/fib_rules.h: fib_rule_hdr {family, dst_len, src_len, tos, table,
    # res1, res2, action; u32 flags}; FIB_RULE_INVERT 2; FRA_PRIORITY 6, FRA_FWMARK 10,
    # FRA_TABLE 15, FRA_FWMASK 16. wg-quick's `not fwmark 51820 table 51820`:
    wg = struct.pack("=BBBBBBBBI", 2, 0, 0, 0, 252, 0, 0, 1, 2) + nla(15, struct.pack("=I", 51820)) \
        + nla(6, struct.pack("=I", 32764)) + nla(10, struct.pack("=I", 0xCA6C)) \
        + nla(16, struct.pack("=I", 0xFFFFFFFF))
    got = R.decode_rule(wg)
    assert (got.family, got.priority, got.table, got.action, got.invert, got.fwmark, got.fwmask) \
        == (2, 32764, 51820, "lookup", True, 0xCA6C, 0xFFFFFFFF)
    # Tailscale's `fwmark 0x80000/0xff0000 lookup main` (table in the header: 254)
    ts = struct.pack("=BBBBBBBBI", 2, 0, 0, 0, 254, 0, 0, 1, 0) + nla(6, struct.pack("=I", 5210)) \
        + nla(10, struct.pack("=I", 0x80000)) + nla(16, struct.pack("=I", 0xFF0000))
    got = R.decode_rule(ts)
    assert (got.table, got.invert, got.fwmark, got.fwmask) == (254, False, 0x80000, 0xFF0000)
    # no mark: not a reader
    main = struct.pack("=BBBBBBBBI", 2, 0, 0, 0, 254, 0, 0, 1, 0) + nla(6, struct.pack("=I", 32766))
    assert R.decode_rule(main).fwmask == 0
    (wg_rule, ts_rule) = sorted(route_rules([R.decode_rule(b) for b in (wg, ts, main)]),
                                key=lambda r: -r.priority)
    assert wg_rule.describe() == "ip rule 32764: not fwmark 0xca6c lookup 51820"
    assert ts_rule.describe() == "ip rule 5210: fwmark 0x80000/0xff0000 lookup 254"
    assert R.decode_rule(R.encode_rule(R.decode_rule(wg))) == R.decode_rule(wg)


def test_inet_diag_answers_decode_the_socket_mark():
    # include/uapi/linux/inet_diag.h: inet_diag_msg {u8 family, state, timer, retrans;
    # inet_diag_sockid {be16 sport, dport; be32 src[4], dst[4]; u32 if; u32 cookie[2]};
    # u32 expires, rqueue, wqueue, uid, inode}, then INET_DIAG_MARK (15, u32).
    sockid = struct.pack("!HH", 51820, 0) + bytes([127, 0, 0, 1]) + bytes(12) + bytes(16) \
        + bytes(12)
    body = struct.pack("=BBBB", 2, 7, 0, 0) + sockid + struct.pack("=IIIII", 0, 0, 0, 0, 4242) \
        + nla(15, struct.pack("=I", 0xCA6C))
    assert R.decode_diag(body, 17) == R.DiagSocket(2, 17, "127.0.0.1:51820", 0xCA6C, 4242)
    # without CAP_NET_ADMIN the kernel leaves the mark out
    assert R.decode_diag(body[:-8], 17).mark is None
    sockets = [R.decode_diag(body, 17), R.DiagSocket(2, 17, "0.0.0.0:9", 0xCA6C, 1),
               R.DiagSocket(2, 6, "0.0.0.0:22", 0, 2)]
    (marked,) = socket_marks(sockets, [])
    assert marked == SocketMark(0xCA6C, "ip", "udp socket 0.0.0.0:9 (SO_MARK)", similar=1)
    assert R.decode_diag(R.encode_diag(sockets[0]), 17) == sockets[0]


# --- owners ----------------------------------------------------------------------------

WG_RULE = RouteRule("ip", 32764, 0xCA6C, 0xFFFFFFFF, True, 51820, "lookup")
NB_RULE = RouteRule("ip", 110, 0x1BD00, 0xFFFFFFFF, True, 0x1BD0, "lookup")
TS_RULE = RouteRule("ip", 5210, 0x80000, 0xFF0000, False, 254, "lookup")

SAVE_MARK = [X.meta_load(C.META_MARK), X.build("ct", key=C.CT_MARK, sreg=1)]
RESTORE_MARK = [X.ct_load(C.CT_MARK), X.build("meta", key=C.META_MARK, sreg=1)]


def wg_quick(guarded: bool = True) -> tuple:
    """wg-quick's table (linux.bash add_default): premangle restores the connection's mark,
    postmangle saves the packet's — only 0xca6c when `guarded`, as wg-quick writes it."""
    return ("ip", "wg-quick-wg0", [base("premangle", C.NF_INET_PRE_ROUTING, -150),
                                   base("postmangle", C.NF_INET_POST_ROUTING, -150)],
            [rule("premangle", RESTORE_MARK, table="wg-quick-wg0"),
             rule("postmangle", mark_test(0xCA6C) if guarded else [], SAVE_MARK,
                  table="wg-quick-wg0")])


def test_routing_rules_and_the_sockets_they_exempt_are_named():
    assert [rule_owner(r) for r in (WG_RULE, NB_RULE, TS_RULE)] == ["wg-quick", "netbird",
                                                                     "tailscale"]
    assert rule_owner(RouteRule("ip", 100, 0x1, 0x1, False, 100, "lookup")) == "unknown"
    # wg-quick with `FwMark = 0x1234`: only its routing rule can name the socket's owner
    custom = SocketMark(0x1234, "inet", "WireGuard link wg1 (fwmark, port 51821)")
    assert socket_owner(custom) == "unknown"
    wg1 = RouteRule("ip", 32764, 0x1234, 0xFFFFFFFF, True, 0x1234, "lookup")
    assert socket_owner(custom, (TS_RULE, wg1)) == "wg-quick"
    assert socket_owner(SocketMark(0x1BD00, "inet", "x")) == "netbird"
    assert socket_owner(SocketMark(0x80000, "ip", "x")) == "tailscale"
    wg = socket_marks([], [R.WgDevice("wg0", 0xCA6C, 51820), R.WgDevice("wg9", 0, 1)])
    assert wg == (SocketMark(0xCA6C, "inet", "WireGuard link wg0 (fwmark, port 51820)"),)


# --- the dataflow ----------------------------------------------------------------------

def kube_firewall():
    """kubelet's KUBE-FIREWALL (kubernetes pkg/kubelet/kubelet_network_linux.go,
    syncNetworkUtil, read at 02c82103): jumped to first from INPUT and OUTPUT, drops
    what carries the drop bit 0x8000."""
    chains = [base("INPUT", C.NF_INET_LOCAL_IN, 0), base("OUTPUT", C.NF_INET_LOCAL_OUT, 0),
              regular("KUBE-FIREWALL")]
    rules = [rule("INPUT", verdict("jump", "KUBE-FIREWALL")),
             rule("OUTPUT", verdict("jump", "KUBE-FIREWALL")),
             rule("KUBE-FIREWALL", xt_match("mark", 0x8000, 0x8000), verdict("drop"))]
    return ("ip", "filter", chains, rules)


def test_a_socket_mark_with_the_drop_bit_is_dropped_by_kube_firewall():
    """kubernetes#113659: WireGuard's FwMark 51820 = 0xca6c carries 0x8000."""
    wg = SocketMark(0xCA6C, "inet", "WireGuard link wg0 (fwmark, port 51820)")
    found = find_conflicts(snapshot(kube_firewall()), Outside((WG_RULE,), (wg,)))
    (c,) = harms(found)
    assert (c.writer.owner, c.writer.kind, c.writer.source, c.writer.rule) == \
        ("wg-quick", "socket mark", wg.source, None)
    assert (c.reader.owner, c.reader.rule.chain, c.bits, c.effect, c.path) == \
        ("kubelet", "KUBE-FIREWALL", 0x8000, "dropped", ("output",))
    doc = conflict_json(c)
    assert (doc["writer"]["kind"], doc["writer"]["table"], doc["writer"]["does"]) == \
        ("socket mark", None, "meta mark set 0xca6c")
    assert "wg-quick WireGuard link wg0 (fwmark, port 51820) (meta mark set 0xca6c)" in \
        conflict_text(c)
    # a mark without the bit, or no socket: nothing
    assert find_conflicts(snapshot(kube_firewall()),
                          Outside((), (SocketMark(0x4A6C, "ip", "s"),))) == ()
    assert find_conflicts(snapshot(kube_firewall()), Outside()) == ()


def test_a_write_that_changes_a_routing_rules_answer_reroutes():
    # a Calico-named writer sets 0x80000 (inside its IptablesMarkMask 0xffff0000) in
    # mangle prerouting; Tailscale's rule then routes the packet by the main table
    mangle = ("ip", "mangle", [base("PREROUTING", C.NF_INET_PRE_ROUTING, -150),
                               base("OUTPUT", C.NF_INET_LOCAL_OUT, -150), regular("cali-mark")],
              [rule("PREROUTING", verdict("jump", "cali-mark"), table="mangle"),
               rule("OUTPUT", verdict("jump", "cali-mark"), table="mangle"),
               rule("cali-mark", xt_mark(0x80000, 0x80000), table="mangle")])
    found = find_conflicts(snapshot(mangle), Outside((TS_RULE,)))
    assert {(c.writer.owner, c.reader.owner, c.reader.base.chain, c.effect) for c in found} \
        == {("calico", "tailscale", "routing decision", "rerouted: into table 254")}
    # in an output chain of type filter the same write re-routes nothing; of type route
    # (iptables' mangle OUTPUT) it does
    route_type = Chain("OUTPUT", 1, C.NF_INET_LOCAL_OUT, -150, C.NF_ACCEPT, "route")
    for out, rerouted in ((base("OUTPUT", C.NF_INET_LOCAL_OUT, -150), False), (route_type, True)):
        t = ("ip", "mangle", [out, regular("cali-mark")],
             [rule("OUTPUT", verdict("jump", "cali-mark"), table="mangle"),
              rule("cali-mark", xt_mark(0x80000, 0x80000), table="mangle")])
        got = find_conflicts(snapshot(t), Outside((TS_RULE,)))
        assert bool(got) == rerouted and all(c.reader.base.chain == "output re-route" for c in got)


def test_a_components_own_routing_rule_and_socket_never_conflict():
    # wg-quick's socket mark and its own `not fwmark` rule; Netbird's mark never equals it
    sockets = (SocketMark(0xCA6C, "inet", "wg0"), SocketMark(0x1BD00, "inet", "wt0"))
    assert find_conflicts(snapshot(), Outside((WG_RULE, NB_RULE, TS_RULE), sockets)) == ()


def test_a_copy_guarded_by_a_test_of_its_source_copies_that_value():
    """wg-quick (linux.bash add_default): postmangle `meta l4proto udp meta mark 0xca6c ct
    mark set meta mark` saves only 0xca6c; premangle restores it. So the restored mark is
    0 or 0xca6c, never kube-router's 0x20000, and its explicit accept is not at stake."""
    # kube-router marks what the node sends to a pod 0x20000 and accepts that mark in INPUT,
    # on a node whose INPUT drops what no rule accepts (so the accept decides)
    def filter_(pod_chain_from: str):
        hook = {"OUTPUT": C.NF_INET_LOCAL_OUT, "FORWARD": C.NF_INET_FORWARD}[pod_chain_from]
        return ("ip", "filter", [base("INPUT", C.NF_INET_LOCAL_IN, 0, policy=C.NF_DROP),
                                 base(pod_chain_from, hook, 0), regular("KUBE-POD-FW-X")],
                [rule("INPUT", comment_rule(), xt_match("mark", 0x20000, 0x20000),
                      verdict("accept")),
                 rule(pod_chain_from, verdict("jump", "KUBE-POD-FW-X")),
                 rule("KUBE-POD-FW-X", xt_mark(0x20000, 0x20000))])
    assert not [c for c in find_conflicts(snapshot(wg_quick(True), filter_("OUTPUT")))
                if c.writer.owner == "wg-quick"]
    # saved whatever the mark holds, the restore brings kube-router's bit back onto the
    # connection's replies, which INPUT sees
    found = harms(find_conflicts(snapshot(wg_quick(False), filter_("OUTPUT"))))
    assert {(c.writer.owner, c.reader.owner, c.bits) for c in found} == \
        {("wg-quick", "kube-router", 0x20000)}
    # saved on forwarded packets, it comes back only on forwarded ones: INPUT never sees it
    assert not [c for c in find_conflicts(snapshot(wg_quick(False), filter_("FORWARD")))
                if c.writer.owner == "wg-quick"]


def test_a_guarded_copy_runs_only_where_its_test_can_hold():
    """wg-quick's save of 0xca6c runs on packets that carry 0xca6c: its socket's, on the
    output path. Without such a sender nothing is saved; with one, the mark comes back on
    the replies (for this node), never on forwarded packets."""
    wg = wg_quick()
    # a reader of 0x4000 on each path: kube-proxy's masquerade (forwarded) and a drop in
    # INPUT (for this node) by another component
    nat = ("ip", "nat", [base("POSTROUTING", C.NF_INET_POST_ROUTING, 100),
                         regular("KUBE-POSTROUTING")],
           [rule("POSTROUTING", verdict("jump", "KUBE-POSTROUTING"), table="nat"),
            rule("KUBE-POSTROUTING", xt_match("mark", 0x4000, 0x4000, invert=True),
                 verdict("return"), table="nat")])
    firewall = ("ip", "filter", [base("INPUT", C.NF_INET_LOCAL_IN, 0), regular("KUBE-FIREWALL")],
                [rule("INPUT", verdict("jump", "KUBE-FIREWALL")),
                 rule("KUBE-FIREWALL", xt_match("mark", 0x8000, 0x8000), verdict("drop"))])
    socket_ = Outside((), (SocketMark(0xCA6C, "inet", "WireGuard link wg0"),))
    assert find_conflicts(snapshot(wg, nat, firewall)) == ()
    found = harms(find_conflicts(snapshot(wg, nat, firewall), socket_))
    assert {(c.writer.owner, c.reader.owner, c.writer.base.chain, c.reader.base.chain)
            for c in found if c.writer.rule is not None} == \
        {("wg-quick", "kubelet", "premangle", "INPUT")}


def comment_rule() -> bytes:
    return comment("KUBE-ROUTER rule to explicitly ACCEPT traffic that comply to network policies")


def test_packets_for_local_addresses_are_routed_before_any_later_fwmark_rule():
    """wg-quick restores 0xca6c onto its replies, which are for this node; Netbird then
    marks wt0's traffic for local addresses 0x1bd20. Both change the answer of
    `not fwmark 0xca6c` only on packets for this node, and those the `local` table (rule
    priority 0) routes before rule 32764 is ever asked."""
    from fwgate.netlink.route import FibRule
    wg = wg_quick()
    netbird = ("ip", "netbird", [base("netbird-mangle-prerouting", C.NF_INET_PRE_ROUTING, -150)],
               [rule("netbird-mangle-prerouting", set_mark(0x1BD20), table="netbird")])
    socket_ = (SocketMark(0xCA6C, "inet", "WireGuard link wg0"),)

    def fib(priority, table, fwmark=0, fwmask=0, invert=False):
        return FibRule(2, priority, table, "lookup", invert, fwmark, fwmask, None, None, None, ())
    wg_rule = fib(32764, 51820, 0xCA6C, ALL, invert=True)
    for local_first, rerouted in ((True, False), (False, True)):
        rules = route_rules([fib(0 if local_first else 40000, 255), wg_rule])
        assert rules[0].after_local is local_first
        found = [c for c in find_conflicts(snapshot(wg, netbird), Outside(rules, socket_))
                 if c.reader.kind == "ip rule"]
        assert bool(found) is rerouted, [conflict_text(c) for c in found]


def kube_proxy_and_flannel_postrouting() -> tuple:
    """kube-proxy's KUBE-POSTROUTING and flannel's FLANNEL-POSTRTG, both on 0x4000."""
    return ("ip", "nat", [base("POSTROUTING", C.NF_INET_POST_ROUTING, 100),
                          regular("KUBE-POSTROUTING"), regular("FLANNEL-POSTRTG")],
            [rule("POSTROUTING", verdict("jump", "KUBE-POSTROUTING"), table="nat"),
             rule("POSTROUTING", comment("flanneld masq"), verdict("jump", "FLANNEL-POSTRTG"),
                  table="nat"),
             rule("KUBE-POSTROUTING", xt_match("mark", 0x4000, 0x4000, invert=True),
                  verdict("return"), table="nat"),
             rule("KUBE-POSTROUTING", X.build("masq"), table="nat"),
             rule("FLANNEL-POSTRTG", xt_match("mark", 0x4000, 0x4000), verdict("return"),
                  table="nat"),
             rule("FLANNEL-POSTRTG", X.build("masq"), table="nat")])




def test_a_socket_mark_with_kube_proxys_bit_is_masqueraded_and_flannel_defers():
    """WireGuard's 0xca6c holds 0x4000: kube-proxy's KUBE-POSTROUTING no longer returns and
    masquerades what the socket sends (a harm); flannel's return on the bit leaves that to
    kube-proxy, whoever set it (shared) — but only while kube-proxy tests it."""
    wg = (SocketMark(0xCA6C, "inet", "WireGuard link wg0"),)
    found = find_conflicts(snapshot(kube_proxy_and_flannel_postrouting()), Outside((WG_RULE,), wg))
    assert {(c.reader.owner, c.severity, c.effect) for c in found} == {
        ("kube-proxy", "harm", "return missed"), ("flannel", "shared", "returns early")}
    (harm,) = harms(found)
    assert harm.then.startswith("then masquerade by ip nat KUBE-POSTROUTING")
    flannel_only = ("ip", "nat", [base("POSTROUTING", C.NF_INET_POST_ROUTING, 100)],
                    [rule("POSTROUTING", comment("flanneld masq"),
                          xt_match("mark", 0x4000, 0x4000), verdict("return"), table="nat"),
                     rule("POSTROUTING", X.build("masq"), table="nat")])
    found = find_conflicts(snapshot(flannel_only), Outside((WG_RULE,), wg))
    assert [c.severity for c in found] == ["harm"]


def test_a_guarded_save_is_no_decision_of_its_own():
    """wg-quick's `meta mark 0xca6c ct mark set meta mark`: another component's bit on the
    packet only keeps the save from running, and that is followed into the connection's
    marks, where they are tested."""
    wg = ("ip", "wg-quick-wg0", [base("postmangle", C.NF_INET_POST_ROUTING, -150)],
          [rule("postmangle", mark_test(0xCA6C), SAVE_MARK, table="wg-quick-wg0")])
    sockets = (SocketMark(0xCA6C, "inet", "wg0"),)
    kube_router = ("ip", "filter", [base("OUTPUT", C.NF_INET_LOCAL_OUT, 0), regular("KUBE-POD-FW-X")],
                   [rule("OUTPUT", verdict("jump", "KUBE-POD-FW-X")),
                    rule("KUBE-POD-FW-X", xt_mark(0x20000, 0x20000))])
    assert find_conflicts(snapshot(wg, kube_router), Outside((WG_RULE,), sockets)) == ()
