"""The dataflow's refinements on hand-built rules: interfaces inherited through jumps,
shadows (the writer's own component ends the packet's way first)."""
from __future__ import annotations

from test_marks import (
    IIF_WT0, base, comment, mark_test, regular, rule, set_mark, snapshot, verdict, xt_mark,
    xt_match,
)

from fwgate.marks import find_conflicts, harms
from fwgate.netlink import consts as C
from fwgate.netlink import exprs as X

IIF_TS = [X.meta_load(C.META_IIFNAME), X.cmp(C.CMP_EQ, X.ifname_bytes("tailscale0", True))]


def vpn(jump_iif: list) -> tuple:
    """A writer in a chain reached only by `iifname wt0 jump` (or any packet's jump), of
    bits another VPN's test reads (values made up for the arithmetic)."""
    chains = [base("PREROUTING", C.NF_INET_PRE_ROUTING, -150), regular("NETBIRD-RT-PRE")]
    rules = [rule("PREROUTING", jump_iif, verdict("jump", "NETBIRD-RT-PRE"), table="mangle"),
             rule("NETBIRD-RT-PRE", xt_mark(0x40000, 0xFF0000), table="mangle")]
    return ("ip", "mangle", chains, rules)


def other_vpn() -> tuple:
    """A test that requires tailscale0: Tailscale's `-m mark --mark 0x40000/0xff0000 -j
    ACCEPT`, here with its interface (as its nat rule's packets have)."""
    chains = [base("FORWARD", C.NF_INET_FORWARD, 0)]
    rules = [rule("FORWARD", IIF_TS, mark_test(0x40000, 0xFF0000), verdict("accept"),
                  table="ts")]
    return ("ip", "ts", chains, rules)


def test_a_jumps_interface_constrains_the_chain_it_jumps_to():
    # reached only through `iifname wt0 jump`: Netbird's mark never meets tailscale0's packets
    assert find_conflicts(snapshot(vpn(IIF_WT0), other_vpn())) == ()
    # the same chain reached by every packet: the write can meet the test
    found = find_conflicts(snapshot(vpn([]), other_vpn()))
    assert [(c.writer.owner, c.bits, c.effect) for c in found] == \
        [("netbird", 0xFF0000, "accepted unexpectedly")]


def test_the_writers_own_accept_on_its_mark_shadows_a_reader_further_down():
    """kube-router's pod chain marks 0x20000, its KUBE-ROUTER-FORWARD accepts 0x20000,
    and only then comes Netbird's exact test (iptables mode, one FORWARD chain)."""
    def forward(accept_first: bool):
        accept = rule("KUBE-ROUTER-FORWARD", comment("rule to explicitly ACCEPT traffic that "
                                                     "comply to network policies"),
                      xt_match("mark", 0x20000, 0x20000), verdict("accept"))
        chains = [base("FORWARD", C.NF_INET_FORWARD, 0), regular("KUBE-ROUTER-FORWARD"),
                  regular("KUBE-POD-FW-X")]
        rules = [rule("FORWARD", verdict("jump", "KUBE-ROUTER-FORWARD")),
                 rule("KUBE-ROUTER-FORWARD", verdict("jump", "KUBE-POD-FW-X")),
                 *([accept] if accept_first else []),
                 rule("KUBE-POD-FW-X", xt_mark(0x20000, 0x20000)),
                 rule("FORWARD", mark_test(0x1BD20), verdict("accept")),
                 rule("FORWARD", IIF_WT0, verdict("drop"))]
        if not accept_first:   # kube-router's accept after Netbird's test: no shadow
            rules.append(rule("FORWARD", xt_match("mark", 0x20000, 0x20000), verdict("accept")))
        return ("ip", "filter", chains, rules)
    netbird = ("ip", "netbird", [base("netbird-mangle-prerouting", C.NF_INET_PRE_ROUTING, -150)],
               [rule("netbird-mangle-prerouting", IIF_WT0, set_mark(0x1BD20), table="netbird")])
    (shadowed,) = [c for c in find_conflicts(snapshot(netbird, forward(True))) if c.bits == 0x20000]
    assert shadowed.severity == "shared" and shadowed.why_shared.startswith("shadowed:")
    assert "KUBE-ROUTER-FORWARD" in shadowed.why_shared
    exposed = [c for c in harms(find_conflicts(snapshot(netbird, forward(False))))
               if c.bits == 0x20000]
    assert [(c.writer.owner, c.reader.owner, c.effect) for c in exposed] == \
        [("kube-router", "netbird", "accept missed")]
