"""The dataflow's refinements on hand-built rules: interfaces inherited through jumps,
shadows (the writer's own component ends the packet's way first)."""
from __future__ import annotations

from fwgate_testing.mark_rules import (
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


POD = bytes([10, 42, 0, 5])
TO_POD = [X.payload_load(C.PAYLOAD_NETWORK, 16, 4), X.cmp(C.CMP_EQ, POD)]
FROM_POD = [X.payload_load(C.PAYLOAD_NETWORK, 12, 4), X.cmp(C.CMP_EQ, POD)]
REJECT = X.xt("target", "REJECT", 0, b"\0" * 8)


def pod_firewall(ingress_policy: bool) -> tuple:
    """kube-router's pod firewall (k3s-io/kube-router pkg/controllers/netpol/pod.go,
    setupPodNetpolRules and dropUnmarkedTrafficRules; policy.go appendRuleToPolicyChain),
    entered for packets to (`-d POD`) and from (`-s POD`) the pod. Without a policy both
    go through KUBE-NWPLCY-DEFAULT, which sets 0x10000; with an ingress policy, packets to
    the pod go through the policy's chain, which sets it only for the sources it allows."""
    pod, policy = "KUBE-POD-FW-X", "KUBE-NWPLCY-POLICY"
    chains = [base("FORWARD", C.NF_INET_FORWARD, 0), regular("KUBE-ROUTER-FORWARD"),
              regular("KUBE-NWPLCY-DEFAULT"), regular(policy), regular(pod)]
    allowed = X.xt("match", "set", 4, b"\0" * 40)   # `-m set --match-set SRC src`
    rules = [rule("FORWARD", comment("kube-router netpol - TEMCG2JMHZYE7H7T"),
                  verdict("jump", "KUBE-ROUTER-FORWARD")),
             rule("KUBE-ROUTER-FORWARD", TO_POD, verdict("jump", pod)),
             rule("KUBE-ROUTER-FORWARD", FROM_POD, verdict("jump", pod)),
             rule("KUBE-NWPLCY-DEFAULT", xt_mark(0x10000, 0x10000)),
             rule(policy, allowed, xt_mark(0x10000, 0x10000)),
             rule(policy, allowed, xt_match("mark", 0x10000, 0x10000), verdict("return")),
             rule(pod, FROM_POD, verdict("jump", "KUBE-NWPLCY-DEFAULT")),
             rule(pod, TO_POD, verdict("jump", policy if ingress_policy else "KUBE-NWPLCY-DEFAULT")),
             rule(pod, xt_match("mark", 0x10000, 0x10000, invert=True), REJECT),
             rule(pod, xt_mark(0, 0x10000)),
             rule(pod, xt_mark(0x20000, 0x20000))]
    return ("ip", "filter", chains, rules)


def test_a_test_its_own_component_decides_first_is_latent():
    netbird = ("ip", "netbird", [base("netbird-mangle-prerouting", C.NF_INET_PRE_ROUTING, -150)],
               [rule("netbird-mangle-prerouting", IIF_WT0, set_mark(0x1BD20), table="netbird")])

    def reject_skipped(policy: bool):
        return [c for c in find_conflicts(snapshot(netbird, pod_firewall(policy)))
                if c.writer.owner == "netbird" and c.effect == "reject skipped"]
    (latent,) = reject_skipped(False)
    assert latent.severity == "shared" and latent.why_shared.startswith("latent: kube-router")
    (harm,) = reject_skipped(True)
    assert harm.severity == "harm"


def calico_to_workload() -> tuple:
    """Felix's chain for packets to a workload (projectcalico/calico v3.32.1
    felix/rules/endpoints.go endpointIptablesChain; policy.go for the profile): clear the
    accept and pass bits 0x30000, jump to the namespace profile, which sets the accept bit
    and returns on it, return on the accept bit, else drop."""
    tw, profile = "cali-tw-cali1a2b3c4d5e6", "cali-pri-kns.default"
    chains = [base("FORWARD", C.NF_INET_FORWARD, 0), regular("cali-FORWARD"), regular(tw),
              regular(profile)]
    rules = [rule("FORWARD", verdict("jump", "cali-FORWARD")),
             rule("cali-FORWARD", verdict("jump", tw)),
             rule(tw, xt_mark(0, 0x30000)),
             rule(tw, verdict("jump", profile)),
             rule(tw, xt_match("mark", 0x10000, 0x10000), verdict("return")),
             rule(tw, verdict("drop")),
             rule(profile, xt_mark(0x10000, 0x10000)),
             rule(profile, xt_match("mark", 0x10000, 0x10000), verdict("return"))]
    return ("ip", "filter", chains, rules)


def test_a_test_after_its_own_components_clear_and_own_writes_is_latent():
    """Netbird's 0x1bd20 holds Calico's accept bit 0x10000, but Calico clears it before
    its profile sets it and its return tests it: no other component's bit reaches that
    test, whatever the profile does after the clear."""
    netbird = ("ip", "netbird", [base("netbird-mangle-prerouting", C.NF_INET_PRE_ROUTING, -150)],
               [rule("netbird-mangle-prerouting", IIF_WT0, set_mark(0x1BD20), table="netbird")])
    found = [c for c in find_conflicts(snapshot(netbird, calico_to_workload()))
             if c.reader.owner == "calico"]
    assert found and all(c.severity == "shared" and c.why_shared.startswith("latent: calico")
                         for c in found), found


def test_a_clear_its_own_component_sets_again_before_the_packet_goes_on_is_no_write():
    """Calico's endpoint chain clears 0x30000 and its profile sets 0x10000 again (or the
    chain drops the packet): Netbird's exact test of 0x1bd20 (which holds 0x10000) sees
    what Netbird wrote. A profile that accepts without setting it would break that."""
    netbird = ("ip", "netbird", [base("netbird-mangle-prerouting", C.NF_INET_PRE_ROUTING, -150),
                                 base("netbird-acl-forward-filter", C.NF_INET_FORWARD, 0)],
               [rule("netbird-mangle-prerouting", IIF_WT0, set_mark(0x1BD20), table="netbird"),
                rule("netbird-acl-forward-filter", mark_test(0x1BD20), verdict("accept"),
                     table="netbird"),
                rule("netbird-acl-forward-filter", IIF_WT0, verdict("drop"), table="netbird")])

    def calico_to_netbird(calico: tuple) -> list:
        return [(c.writer.owner, c.effect) for c in find_conflicts(snapshot(netbird, calico))
                if c.writer.owner == "calico" and c.reader.owner == "netbird"]
    assert calico_to_netbird(calico_to_workload()) == []
    family, table, chains, rules = calico_to_workload()
    accepting = [r if r.chain != "cali-pri-kns.default" else
                 rule("cali-pri-kns.default", verdict("accept")) for r in rules]
    accepting = list(dict.fromkeys(accepting))
    assert calico_to_netbird((family, table, chains, accepting)) == \
        [("calico", "accept missed")]


NETBIRD_MARK = ("ip", "netbird", [base("netbird-mangle-prerouting", C.NF_INET_PRE_ROUTING, -150)],
                [rule("netbird-mangle-prerouting", IIF_WT0, set_mark(0x1BD20), table="netbird")])


def calico_input(host_endpoint: list, kube_firewall: bool) -> tuple:
    """Felix's cali-INPUT (felix/rules/static.go filterInputChain): accept what carries its
    accept bit 0x10000, else clear its bits and run host endpoint policy; optionally
    kubelet's KUBE-FIREWALL after it in INPUT."""
    chains = [base("INPUT", C.NF_INET_LOCAL_IN, 0), regular("cali-INPUT"),
              regular("cali-from-host-endpoint"), regular("KUBE-FIREWALL")]
    rules = [rule("INPUT", verdict("jump", "cali-INPUT")),
             *([rule("INPUT", verdict("jump", "KUBE-FIREWALL"))] if kube_firewall else []),
             rule("cali-INPUT", xt_match("mark", 0x10000, 0x10000), verdict("accept")),
             rule("cali-INPUT", xt_mark(0, 0x1B0000)),
             rule("cali-INPUT", verdict("jump", "cali-from-host-endpoint")),
             *[rule("cali-from-host-endpoint", *parts) for parts in host_endpoint],
             rule("KUBE-FIREWALL", comment("block incoming localnet connections"),
                  verdict("drop"))]
    return ("ip", "filter", chains, rules)


def calico_forward(host_endpoint: list) -> tuple:
    """Felix's cali-FORWARD: clear all but the accept bit, host endpoint forward policy
    only for what no earlier chain accepted (`--mark 0x0/0x10000 -j cali-from-hep-forward`)."""
    chains = [base("FORWARD", C.NF_INET_FORWARD, 0), regular("cali-FORWARD"),
              regular("cali-from-hep-forward")]
    rules = [rule("FORWARD", verdict("jump", "cali-FORWARD")),
             rule("cali-FORWARD", xt_mark(0, 0x1A0000)),
             rule("cali-FORWARD", xt_match("mark", 0, 0x10000),
                  verdict("jump", "cali-from-hep-forward")),
             *[rule("cali-from-hep-forward", *parts) for parts in host_endpoint]]
    return ("ip", "filter", chains, rules)


def netbird_to_calico(calico: tuple) -> list:
    return [(c.effect, c.severity) for c in find_conflicts(snapshot(NETBIRD_MARK, calico))
            if c.writer.owner == "netbird" and c.reader.owner == "calico"]


def test_an_early_verdict_that_skips_only_empty_chains_is_latent():
    """Netbird's 0x1bd20 holds Calico's accept bit: Felix's tests then skip its host
    endpoint chains. Without host endpoints those are empty and the policy accepts anyway:
    the packet's fate is the same, latent. A host endpoint policy's drop makes it a harm."""
    hep_drop = [[IIF_WT0, verdict("drop")]]
    assert netbird_to_calico(calico_input([], kube_firewall=False)) == \
        [("accepted unexpectedly", "shared")]
    assert netbird_to_calico(calico_input(hep_drop, kube_firewall=False)) == \
        [("accepted unexpectedly", "harm")]
    assert netbird_to_calico(calico_forward([])) == [("jump to cali-from-hep-forward missed",
                                                      "shared")]
    assert netbird_to_calico(calico_forward(hep_drop)) == [("jump to cali-from-hep-forward missed",
                                                            "harm")]
    (latent,) = [c for c in find_conflicts(snapshot(NETBIRD_MARK, calico_forward([])))
                 if c.reader.owner == "calico"]
    assert latent.why_shared.startswith("latent: the rules calico skips")
    assert "empty here: cali-from-hep-forward" in latent.why_shared


def test_an_early_accept_that_skips_another_components_drop_is_a_harm():
    """cali-INPUT's accept ends INPUT: kubelet's KUBE-FIREWALL after it (its localnet
    block) never runs for what Netbird marked, even with Calico's own chains empty."""
    assert netbird_to_calico(calico_input([], kube_firewall=True)) == \
        [("accepted unexpectedly", "harm")]


def test_an_early_accept_before_a_dropping_policy_is_a_harm():
    family, table, chains, rules = calico_input([], kube_firewall=False)
    chains = [base("INPUT", C.NF_INET_LOCAL_IN, 0, policy=C.NF_DROP), *chains[1:]]
    assert netbird_to_calico((family, table, chains, rules)) == [("accepted unexpectedly", "harm")]


def calico_postrouting(kube_mark_masq: bool) -> tuple:
    """Felix's mangle cali-POSTROUTING (static.go StaticManglePostroutingChain): return on
    the accept bit, else clear Calico's bits and run host endpoint policy; optionally a
    jump to kube-proxy's KUBE-MARK-MASQ after its clear."""
    chains = [base("POSTROUTING", C.NF_INET_POST_ROUTING, -150), regular("cali-POSTROUTING"),
              regular("cali-to-host-endpoint"), regular("KUBE-MARK-MASQ")]
    after_clear = [[verdict("jump", "KUBE-MARK-MASQ")]] if kube_mark_masq else []
    rules = [rule("KUBE-MARK-MASQ", xt_mark(0x4000, 0x4000), table="mangle"),
             rule("POSTROUTING", verdict("jump", "cali-POSTROUTING"), table="mangle"),
             rule("cali-POSTROUTING", xt_match("mark", 0x10000, 0x10000), verdict("return"),
                  table="mangle"),
             rule("cali-POSTROUTING", xt_mark(0, 0x1B0000), table="mangle"),
             *[rule("cali-POSTROUTING", *parts, table="mangle") for parts in after_clear],
             rule("cali-POSTROUTING", verdict("jump", "cali-to-host-endpoint"), table="mangle")]
    return ("ip", "mangle", chains, rules)


def test_an_early_return_that_skips_only_its_own_clear_is_latent():
    """Returning early skips Calico's own clear of its bits and an empty host endpoint
    chain: latent. Skipping another component's mark (here kube-proxy's chain) is not."""
    assert netbird_to_calico(calico_postrouting(kube_mark_masq=False)) == \
        [("returns early", "shared")]
    assert netbird_to_calico(calico_postrouting(kube_mark_masq=True)) == \
        [("returns early", "harm")]
