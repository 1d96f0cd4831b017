"""A corpus of real components' rulesets, each as its upstream source writes it, on the
lab of test_marks_packets (peer ── wt0 ── node ── cni0 ── pod).

For every one: each rule that writes or tests a mark is named (no "unknown"), and the
node gives exactly the harms proven with packets — none for a standard node.

Sources, each read at the version named:
- Netbird in iptables mode: netbirdio/netbird v0.77.1 client/firewall/iptables/
  acl_linux.go (seedInitialEntries, seedInitialOptionalEntries: entries inserted at
  position 1 in reverse, the mark accept at position 2; the ACL's mangle rule into
  NETBIRD-RT-PRE), router_linux.go (setupDataPlaneMark; the jumps from built-in chains).
- Tailscale: tailscale/tailscale util/linuxfw/iptables_runner.go at 0002b411 (AddHooks,
  addBase4, AddStatefulRule, AddSNATRule, AddConnmarkSaveRule, AddMagicsockPortRule);
  its routing rules wgengine/router/router_linux.go (ipRules: 5210-5270).
- wg-quick: WireGuard/wireguard-tools v1.0.20210914 src/wg-quick/linux.bash add_default
  (the nft path: table wg-quick-IFACE, preraw / premangle / postmangle).
- Cilium: its mangle chains as its iptables manager leaves them, from the `iptables -S`
  its own tests expect (cilium/cilium pkg/datapath/iptables/iptables_test.go at 01524ef0,
  TestAddProxyRulesv4: the feeders, the transparent-socket mark 0x200, the DNS proxy's
  TPROXY on its mark); kubelet's rules as tests/netns/test_marks_outside.py has them.
- Calico: Felix in iptables mode, projectcalico/calico v3.32.1 (0ca9d1b9) felix/rules/
  static.go, endpoints.go, dispatch.go, policy.go, nat.go and its mark bits from
  felix/dataplane/driver.go (at the Calico section below, rule group by rule group), on
  its own lab: two workloads behind `cali…` veths and the node.
"""
from __future__ import annotations

import json
import math
import shlex
import socket
import time

import pytest

from fwgate_testing.helpers import delete_netns, fwgate_cmd, in_netns, new_netns, sh
from fwgate_testing.marks_lab import (  # noqa: F401  (lab is a fixture)
    arrived, dropped_by_netbird, lab, masqueraded, send,
)
from fwgate_testing.rulesets import (
    FLANNEL, HOSTPORT, K3S_EXPLICIT_ACCEPT, KUBE_PROXY, KUBE_PROXY_FIXED, KUBE_ROUTER, KUBELET,
    NODE_WT0, PEER_WT0, POD, POD_FW, PORTMAP, SERVICE_PORT, netbird,
)

NETBIRD_IPTABLES = f"""*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:NETBIRD-RT-PRE - [0:0]
-A PREROUTING -j NETBIRD-RT-PRE
-A PREROUTING -i wt0 -m conntrack --ctstate NEW -j CONNMARK --set-xmark 0x1bd10/0xffffffff
-A FORWARD -i wt0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -i wt0 -m conntrack --ctstate DNAT -m mark ! --mark 0x1bd20 -j DROP
-A POSTROUTING -o wt0 -m conntrack --ctstate NEW -j CONNMARK --set-xmark 0x1bd11/0xffffffff
-A NETBIRD-RT-PRE -s {PEER_WT0}/32 -p udp -i wt0 -m addrtype --dst-type LOCAL -j MARK --set-xmark 0x1bd20/0xffffffff
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:NETBIRD-ACL-INPUT - [0:0]
:NETBIRD-RT-FWD-IN - [0:0]
:NETBIRD-RT-FWD-OUT - [0:0]
-A INPUT -i wt0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -i wt0 -j NETBIRD-ACL-INPUT
-A INPUT -i wt0 -j DROP
-A FORWARD -i wt0 -j NETBIRD-RT-FWD-IN
-A FORWARD -m mark --mark 0x1bd20 -j ACCEPT
-A FORWARD -o wt0 -j NETBIRD-RT-FWD-OUT
-A FORWARD -i wt0 -j DROP
-A NETBIRD-ACL-INPUT -s {PEER_WT0}/32 -p udp -j ACCEPT
-A NETBIRD-RT-FWD-IN -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A NETBIRD-RT-FWD-OUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
"""

TAILSCALE = """*mangle
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A PREROUTING -m conntrack --ctstate RELATED,ESTABLISHED -j CONNMARK --restore-mark --nfmask 0xff0000 --ctmask 0xff0000
-A OUTPUT -m conntrack --ctstate NEW -m mark ! --mark 0x0/0xff0000 -j CONNMARK --save-mark --nfmask 0xff0000 --ctmask 0xff0000
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:ts-input - [0:0]
:ts-forward - [0:0]
-A INPUT -j ts-input
-A FORWARD -j ts-forward
-A ts-input -i lo -s 100.100.1.1/32 -j ACCEPT
-A ts-input ! -i tailscale0 -s 100.115.92.0/23 -j RETURN
-A ts-input ! -i tailscale0 -s 100.64.0.0/10 -j DROP
-A ts-input -i tailscale0 -j ACCEPT
-A ts-input -p udp -m udp --dport 41641 -j ACCEPT
-A ts-forward -i tailscale0 -j MARK --set-xmark 0x40000/0xff0000
-A ts-forward -m mark --mark 0x40000/0xff0000 -j ACCEPT
-A ts-forward -s 100.64.0.0/10 -o tailscale0 -j DROP
-A ts-forward -o tailscale0 -m conntrack ! --ctstate RELATED,ESTABLISHED -j DROP
-A ts-forward -o tailscale0 -j ACCEPT
COMMIT
*nat
:POSTROUTING ACCEPT [0:0]
:ts-postrouting - [0:0]
-A POSTROUTING -j ts-postrouting
-A ts-postrouting -m mark --mark 0x40000/0xff0000 -j MASQUERADE
COMMIT
"""
TAILSCALE_RULES = [("5210", "fwmark", "0x80000/0xff0000", "table", "main"),
                   ("5230", "fwmark", "0x80000/0xff0000", "table", "default"),
                   ("5250", "fwmark", "0x80000/0xff0000", "unreachable"),
                   ("5270", "table", "52")]

WG_QUICK = """table ip wg-quick-wg0 {
  chain preraw {
    type filter hook prerouting priority -300; policy accept;
    iifname != "wg0" ip daddr 10.77.0.2 fib saddr type != local drop
  }
  chain premangle {
    type filter hook prerouting priority mangle; policy accept;
    meta l4proto udp meta mark set ct mark
  }
  chain postmangle {
    type filter hook postrouting priority mangle; policy accept;
    meta l4proto udp meta mark 0x0000ca6c ct mark set meta mark
  }
}
"""


def tailscale(node: str) -> None:
    sh(node, "ip", "link", "add", "tailscale0", "type", "veth", "peer", "name", "tailscale0p")
    sh(node, "iptables-restore", "-n", input=TAILSCALE)
    for rule in TAILSCALE_RULES:
        sh(node, "ip", "-4", "rule", "add", "priority", *rule)


def wg_quick(node: str) -> None:
    sh(node, "ip", "link", "add", "wg0", "type", "veth", "peer", "name", "wg0p")
    sh(node, "nft", "-f", "-", input=WG_QUICK)
    sh(node, "ip", "-4", "rule", "add", "not", "fwmark", "51820", "table", "51820")
    sh(node, "ip", "-4", "rule", "add", "table", "main", "suppress_prefixlength", "0")


WG_FWMARK, WG_PORT = 0xCA6C, 51820   # wg-quick's default FwMark and table, 51820


def wireguard_socket(node: str) -> socket.socket:
    """What WireGuard sends leaves with its fwmark: a UDP socket with SO_MARK 0xca6c on
    its port (this kernel has no WireGuard; to netfilter the skb->mark is the same)."""
    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, WG_FWMARK)
        s.bind(("0.0.0.0", WG_PORT))
        return s
    return in_netns(node, make)


def wg_quick_default_route(node: str) -> None:
    """wg-quick with AllowedIPs 0.0.0.0/0: its routing rules, and table 51820's default
    route through wg0 (`suppress_prefixlength 0` keeps main's more specific routes)."""
    wg_quick(node)
    sh(node, "ip", "link", "set", "wg0", "up")
    sh(node, "ip", "route", "add", "0.0.0.0/0", "dev", "wg0", "table", str(WG_PORT))


def source_port_seen(peer: str, sender: socket.socket, port: int) -> int:
    """Send one datagram from `sender` to the peer's `port`; the source port it arrives
    with."""
    receiver = in_netns(peer, udp_listener, PEER_WT0, port, 5)
    try:
        sender.sendto(b"handshake", (PEER_WT0, port))
        return receiver.recvfrom(64)[1][1]
    finally:
        receiver.close()


def k3s(node: str) -> None:
    sh(node, "iptables-restore", "-n", input=PORTMAP)
    sh(node, "iptables-restore", "-n", input=KUBE_PROXY)
    sh(node, "iptables-restore", "-n", input=FLANNEL)
    sh(node, "iptables-restore", "-n", input=KUBE_ROUTER.replace(
        "COMMIT", K3S_EXPLICIT_ACCEPT + "\nCOMMIT"))


def owners(node: str) -> dict[str, str]:
    """Every mark-touching rule's owner, by `family table chain handle`."""
    from fwgate.adapters.nfsock import NfSocket
    from fwgate.adapters.nft import snapshot
    from fwgate.marks.model import rule_marks
    from fwgate.marks.owners import owner_of

    def take():
        with NfSocket() as sock:
            return snapshot(sock, families=("ip", "ip6", "inet"))
    out = {}
    for table in in_netns(node, take).tables.values():
        for rule in table.rules:
            marks = rule_marks(rule)
            if marks.writes or marks.reads:
                out[rule.ref] = owner_of(rule, marks)
    return out


def conflicts(node: str, everything: bool = False) -> tuple[int, list[dict]]:
    out = sh(node, *fwgate_cmd(), "conflicts", "--json", *(["--all"] if everything else []),
             check=False)
    assert out.returncode in (0, 1), out.stderr
    return out.returncode, json.loads(out.stdout)["conflicts"]


def pairs(found: list[dict]) -> set[tuple]:
    return {(c["writer"]["owner"], c["reader"]["owner"], c["bits"], c["effect"]) for c in found}


@pytest.mark.parametrize("component", ["netbird-iptables", "tailscale", "wg-quick"])
def test_each_component_alone_is_named_and_raises_no_alarm(lab, component):
    node, _, _ = lab
    {"netbird-iptables": lambda: sh(node, "iptables-restore", "-n", input=NETBIRD_IPTABLES),
     "tailscale": lambda: tailscale(node), "wg-quick": lambda: wg_quick(node)}[component]()
    named = owners(node)
    assert named and set(named.values()) == {component.split("-iptables")[0]}, named
    assert conflicts(node, everything=True) == (0, [])


def counted(node: str, table: str, chain: str, verdict: str) -> int:
    """Packets through the chain's first counting rule ending in `verdict` (iptables-nft
    gives every rule a counter)."""
    listing = json.loads(sh(node, "nft", "-j", "list", "chain", "ip", table, chain).stdout)
    for item in listing["nftables"]:
        exprs = item.get("rule", {}).get("expr", [])
        if any(verdict in e for e in exprs):
            return next(e["counter"]["packets"] for e in exprs if "counter" in e)
    raise AssertionError(f"no {verdict} rule in {table} {chain}")


def test_k3s_and_netbird_in_iptables_mode(lab):
    """Netbird's iptables mode below kube-router's jump in FORWARD (kube-router keeps its
    jump first at each sync). Its rules share the chain: kube-router's explicit accept
    takes the hostPort traffic before Netbird's mark test (shadowed, not a harm), while
    Netbird's mark 0x1bd20 carries portmap's 0x2000 and kube-proxy's 0x4000 breaks
    Netbird's mangle FORWARD guard for DNATed traffic."""
    node, peer, pod = lab
    k3s(node)
    sh(node, "iptables-restore", "-n", input=NETBIRD_IPTABLES)
    named = owners(node)
    assert "unknown" not in named.values(), named

    code, harms = conflicts(node)
    assert code == 1
    found = pairs(harms)
    assert ("netbird", "cni-portmap", "0x2000", "masqueraded unexpectedly") in found
    assert ("kube-proxy", "netbird", "0x4000", "dropped") in found
    guard = next(c for c in harms if c["effect"] == "dropped")
    assert (guard["reader"]["table"], guard["reader"]["chain"]) == ("mangle", "FORWARD")
    # kube-router's marks and Netbird's accept: shadowed by kube-router's own accept
    _, everything = conflicts(node, everything=True)
    shadowed = [c for c in everything if c["writer"]["owner"] == "kube-router"
                and c["reader"]["owner"] == "netbird"]
    assert shadowed and all(c["severity"] == "shared" and c["why_shared"].startswith("shadowed")
                            for c in shadowed), shadowed

    # hostPort: accepted by kube-router (not dropped by Netbird), masqueraded by portmap
    send(peer, HOSTPORT)
    assert (arrived(pod), masqueraded(pod)) == (3, 3)
    assert counted(node, "mangle", "FORWARD", "drop") == 0
    # service: kube-proxy's 0x4000 makes 0x1fd20, and Netbird's guard drops it
    send(peer, SERVICE_PORT)
    assert arrived(pod) == 3
    assert counted(node, "mangle", "FORWARD", "drop") == 3


def test_k3s_and_tailscale_raise_no_alarm(lab):
    """Tailscale's connection-mark save runs in mangle OUTPUT, before kube-router marks
    anything: what it saves, and so what its restore in mangle PREROUTING brings back,
    is only what locally sent packets carry there — never kube-router's bits."""
    node, peer, pod = lab
    k3s(node)
    tailscale(node)
    named = owners(node)
    assert "unknown" not in named.values(), named
    code, harms = conflicts(node)
    assert (code, harms) == (0, []), harms
    send(peer, HOSTPORT)
    assert arrived(pod) == 3


CILIUM = """*mangle
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:CILIUM_PRE_mangle - [0:0]
:CILIUM_POST_mangle - [0:0]
-A PREROUTING -m comment --comment "cilium-feeder: CILIUM_PRE_mangle" -j CILIUM_PRE_mangle
-A POSTROUTING -m comment --comment "cilium-feeder: CILIUM_POST_mangle" -j CILIUM_POST_mangle
-A CILIUM_PRE_mangle -m socket --transparent -m comment --comment "cilium: any->pod redirect proxied traffic to host proxy" -j MARK --set-xmark 0x200/0xffffffff
-A CILIUM_PRE_mangle -p tcp -m mark --mark 0x3920200 -m comment --comment "cilium: TPROXY to host cilium-dns-egress proxy" -j TPROXY --on-port 37379 --on-ip 127.0.0.1 --tproxy-mark 0x200/0xffffffff
-A CILIUM_PRE_mangle -p udp -m mark --mark 0x3920200 -m comment --comment "cilium: TPROXY to host cilium-dns-egress proxy" -j TPROXY --on-port 37379 --on-ip 127.0.0.1 --tproxy-mark 0x200/0xffffffff
COMMIT
"""


def test_a_cilium_node_with_kube_proxy_and_kubelet_raises_no_alarm(lab):
    """Cilium's whole mark 0x200 leaves kube-proxy's 0x4000 and kubelet's 0x8000 as they
    were (0 on a received packet): nothing to report, and the service works."""
    node, peer, pod = lab
    sh(node, "iptables-restore", "-n", input=CILIUM)
    sh(node, "iptables-restore", "-n", input=KUBE_PROXY)
    sh(node, "iptables-restore", "-n", input=KUBELET)
    named = owners(node)
    assert set(named.values()) == {"cilium", "kube-proxy", "kubelet"}, named
    assert conflicts(node, everything=True) == (0, [])
    send(peer, SERVICE_PORT)
    assert arrived(pod) == 3


def through_target(node: str, table: str, chain: str, target: str) -> int:
    """Packets through the chain's rule ending in the x_tables `target` (its counter)."""
    listing = json.loads(sh(node, "nft", "-j", "list", "chain", "ip", table, chain).stdout)
    for item in listing["nftables"]:
        exprs = item.get("rule", {}).get("expr", [])
        if {"xt": {"type": "target", "name": target}} in exprs:
            return next(e["counter"]["packets"] for e in exprs if "counter" in e)
    raise AssertionError(f"no {target} in {table} {chain}")


def masqueraded_by_kube_proxy(node: str) -> int:
    return through_target(node, "nat", "KUBE-POSTROUTING", "MASQUERADE")


def test_k3s_and_wg_quick(lab):
    """wg-quick's restore and guarded save of 0xca6c never meet k3s's marks: the mark is
    saved on what the WireGuard socket sends and comes back on the replies, which are for
    this node (the `local` table routes them before `not fwmark 0xca6c`). No alarm without
    WireGuard's sender, and the hostPort and the service work. With it, one harm, and a
    real one: 0xca6c holds kube-proxy's masquerade bit 0x4000, so KUBE-POSTROUTING
    masquerades (--random-fully) what WireGuard sends: its source port is rewritten."""
    node, peer, pod = lab
    k3s(node)
    wg_quick_default_route(node)
    named = owners(node)
    assert "unknown" not in named.values(), named
    assert conflicts(node) == (0, [])
    send(peer, HOSTPORT)
    send(peer, SERVICE_PORT)
    assert arrived(pod) == 6

    sender = wireguard_socket(node)
    try:
        code, harms = conflicts(node)
        assert code == 1
        assert [(c["writer"]["owner"], c["writer"]["kind"], c["reader"]["owner"], c["bits"],
                 c["effect"]) for c in harms] == \
            [("wg-quick", "socket mark", "kube-proxy", "0x4000", "return missed")], harms
        assert harms[0]["then"].startswith("then masquerade by ip nat KUBE-POSTROUTING")
        # with kube-proxy's rules: masqueraded, a new source port
        before = masqueraded_by_kube_proxy(node)   # the service's connection
        assert source_port_seen(peer, sender, 51820) != WG_PORT
        assert masqueraded_by_kube_proxy(node) == before + 1
        # without them: the port WireGuard sent from (a new flow: no conntrack entry)
        sh(node, "iptables", "-t", "nat", "-F", "KUBE-POSTROUTING")
        assert source_port_seen(peer, sender, 51821) == WG_PORT
    finally:
        sender.close()


def test_netbird_and_wg_quick(lab):
    """wg-quick's premangle (`meta mark set ct mark`, prerouting at mangle priority like
    Netbird's) brings back the connection's mark 0x1bd10 over Netbird's 0x1bd20 when it
    runs after Netbird's chain — when wg-quick's table is the older one: peer traffic to
    a hostPort is dropped. wg-quick's routing rule, guarded save and socket meet no
    Netbird packet."""
    node, peer, pod = lab
    sh(node, "iptables-restore", "-n", input=PORTMAP)
    sender = wireguard_socket(node)
    try:
        wg_quick_default_route(node)
        sh(node, "nft", "-f", "-", input=netbird())   # newer: its chain runs first
        named = owners(node)
        assert "unknown" not in named.values(), named
        code, harms = conflicts(node)
        assert code == 1
        assert {(c["writer"]["owner"], c["reader"]["owner"], c["reader"]["chain"], c["effect"])
                for c in harms} == {
            ("wg-quick", "netbird", "netbird-acl-forward-filter", "accept missed"),
            # Netbird's own 0x1bd20 carries portmap's 0x2000 (test_marks_packets, with packets)
            ("netbird", "cni-portmap", "CNI-HOSTPORT-MASQ", "masqueraded unexpectedly"),
            # the restored 0x1bd10 carries it too (with packets, for a routed peer's flow:
            # test_wg_quick_restores_portmaps_masquerade_bit_onto_a_routed_peers_flow)
            ("wg-quick", "cni-portmap", "CNI-HOSTPORT-MASQ",
             "masquerade skipped or masqueraded unexpectedly")}, harms
        send(peer, HOSTPORT)
        assert (dropped_by_netbird(node), arrived(pod)) == (3, 0)
        # without wg-quick's table: delivered
        sh(node, "nft", "delete", "table", "ip", "wg-quick-wg0")
        send(peer, HOSTPORT)
        assert (dropped_by_netbird(node), arrived(pod)) == (3, 3)
        # wg-quick's table newer (Netbird restarted before it): delivered, and still
        # reported, for the next restart of Netbird turns it round
        sh(node, "nft", "-f", "-", input=WG_QUICK)
        send(peer, HOSTPORT)
        assert (dropped_by_netbird(node), arrived(pod)) == (3, 6)
        assert masqueraded(pod) == 6   # Netbird's 0x2000: the pod sees the node, not the peer
        assert conflicts(node)[0] == 1
    finally:
        sender.close()


# kube-router with a NetworkPolicy selecting the pod (k3s-io/kube-router, the v2 line read
# at 569ffdf3: pkg/controllers/netpol/pod.go setupPodNetpolRules — an ingress policy's
# jump `-I POD-FW 1 -d POD -m comment --comment "run through nw policy NAME" -j
# KUBE-NWPLCY-…` takes the place of the default ingress chain; policy.go
# processIngressRules and appendRuleToPolicyChain — for `from: podSelector`, a MARK
# --set-xmark 0x10000/0x10000 and a RETURN on it, both matching the source pods' and the
# target pods' ipsets). The policy lets only another pod (10.42.0.7) in.
POLICY_CHAIN = "KUBE-NWPLCY-C7GMZWVLMVGDGH5U"
SRC_SET, DST_SET = "KUBE-SRC-NDHR2CWGYXGSM6KV", "KUBE-DST-NDHR2CWGYXGSM6KV"
_MATCH = (f'-m comment --comment "rule to ACCEPT traffic from source pods to dest pods selected '
          f'by policy name allow-pods namespace kube-system" -m set --match-set {SRC_SET} src '
          f'-m set --match-set {DST_SET} dst')
KUBE_ROUTER_POLICY = KUBE_ROUTER.replace(
    f'-A {POD_FW} -d {POD} -m comment --comment "run through default ingress network policy '
    f'chain" -j KUBE-NWPLCY-DEFAULT',
    f'-A {POD_FW} -d {POD} -m comment --comment "run through nw policy allow-pods" -j {POLICY_CHAIN}'
).replace(":KUBE-NWPLCY-DEFAULT - [0:0]", f":KUBE-NWPLCY-DEFAULT - [0:0]\n:{POLICY_CHAIN} - [0:0]"
          ).replace("COMMIT", f"""-A {POLICY_CHAIN} {_MATCH} -j MARK --set-xmark 0x10000/0x10000
-A {POLICY_CHAIN} {_MATCH} -m mark --mark 0x10000/0x10000 -j RETURN
{K3S_EXPLICIT_ACCEPT}
COMMIT""")


def test_kube_routers_reject_is_latent_until_a_network_policy_selects_the_pod(lab):
    """Netbird's 0x1bd20 carries kube-router's "a policy matched" bit 0x10000. Without a
    policy kube-router's default chain sets that bit itself on every packet its REJECT
    sees: latent, shown with --all. With an ingress policy that admits only another pod,
    the peer's traffic to the pod is rejected — unless Netbird marked it: then it passes
    the policy (Netbird's table registered after kube-router's, so netbird#6022 does not
    drop it first)."""
    node, peer, pod = lab
    sh(node, "iptables-restore", "-n", input=PORTMAP)
    sh(node, "iptables-restore", input=KUBE_ROUTER.replace(
        "COMMIT", K3S_EXPLICIT_ACCEPT + "\nCOMMIT"))
    sh(node, "nft", "-f", "-", input=netbird())
    _, everything = conflicts(node, everything=True)
    latent = [c for c in everything if c["effect"] == "reject skipped"]
    assert [(c["writer"]["owner"], c["reader"]["owner"], c["bits"], c["severity"])
            for c in latent] == [("netbird", "kube-router", "0x10000", "shared")], latent
    assert latent[0]["why_shared"].startswith("latent: kube-router")
    send(peer, HOSTPORT)
    assert arrived(pod) == 3

    # the policy: first without Netbird, the peer is rejected
    sh(node, "nft", "delete", "table", "ip", "netbird")
    sh(node, "ipset", "create", SRC_SET, "hash:ip")
    sh(node, "ipset", "add", SRC_SET, "10.42.0.7")
    sh(node, "ipset", "create", DST_SET, "hash:ip")
    sh(node, "ipset", "add", DST_SET, POD)
    sh(node, "iptables-restore", input=KUBE_ROUTER_POLICY)
    send(peer, HOSTPORT)
    assert (arrived(pod), through_target(node, "filter", POD_FW, "REJECT")) == (3, 3)
    # with Netbird's table: its mark lets the peer through the policy
    sh(node, "nft", "-f", "-", input=netbird())
    code, harms = conflicts(node)
    assert code == 1
    assert ("netbird", "kube-router", "0x10000", "reject skipped") in pairs(harms), harms
    send(peer, HOSTPORT)
    assert (arrived(pod), through_target(node, "filter", POD_FW, "REJECT")) == (6, 3)


def test_netbird_and_tailscale_share_bits_without_harm(lab):
    """Tailscale's restore into 0xff0000 runs on established and related packets only,
    and Netbird's forward chain accepts those by their state (its route chain's first
    rule) whatever their mark: shared, not a harm. With packets: a peer's exchange with
    a pod behind a hostPort, its later datagrams through the restore, all delivered."""
    import threading

    node, peer, pod = lab
    sh(node, "iptables-restore", "-n", input=PORTMAP)
    tailscale(node)
    sh(node, "nft", "-f", "-", input=netbird())
    named = owners(node)
    assert "unknown" not in named.values(), named
    # the one harm is Netbird's own 0x1bd20 carrying portmap's 0x2000 (the hostPort)
    code, harms = conflicts(node)
    assert (code, pairs(harms)) == (1, {("netbird", "cni-portmap", "0x2000",
                                         "masqueraded unexpectedly")}), harms
    _, everything = conflicts(node, everything=True)
    restores = [c for c in everything if c["writer"]["owner"] == "tailscale"
                and c["reader"]["owner"] == "netbird"]
    assert restores and all("established and related packets only" in c["why_shared"]
                            for c in restores), restores

    server = in_netns(pod, udp_listener, POD, HOSTPORT, 5)
    client = in_netns(peer, udp_listener, PEER_WT0, 0, 5)

    def echo() -> None:
        for _ in range(3):
            data, source = server.recvfrom(64)
            server.sendto(data, source)
    replier = threading.Thread(target=echo)
    replier.start()
    try:
        for _ in range(3):   # the first opens the connection, the others are established
            client.sendto(b"fwgate", (NODE_WT0, HOSTPORT))
            assert client.recvfrom(64)[0] == b"fwgate"
    finally:
        replier.join(timeout=10)
        server.close()
        client.close()
    assert (arrived(pod), masqueraded(pod)) == (3, 3)
    assert through_target(node, "mangle", "PREROUTING", "CONNMARK") >= 2   # the restore ran


# --- a Calico node: Felix in iptables mode (iptables-nft), kube-proxy, kubelet -------------
#
# Felix's rules as projectcalico/calico v3.32.1 (0ca9d1b9) renders them with its defaults
# and the calico.yaml manifest's settings (FELIX_DEFAULTENDPOINTTOHOSTACTION=ACCEPT; no
# IPIP/VXLAN/WireGuard, no host endpoints, no policy; one namespace profile that allows
# all). Mark bits (felix/dataplane/driver.go, in order from IptablesMarkMask 0xffff0000,
# felix/config/config_params.go): accept 0x10000, pass 0x20000, drop 0x40000,
# scratch0 0x80000, scratch1 0x100000; allCalicoMarkBits = 0x1b0000.
# Every rule carries Felix's `cali:<hash>` comment, computed the way Felix does
# (felix/generictables/rules.go RuleHashes: SHA-224 chained from the chain name over each
# rule's text, URL-safe base64, 16 characters) over the rule text written here.
CALI_A, CALI_B = "cali1a2b3c4d5e6", "cali6e5d4c3b2a1"   # "cali" + 11 hex, as Calico names
POD_A, POD_B, HOST_IP, CLUSTER_IP = "192.168.10.5", "192.168.10.6", "172.20.0.1", "10.43.0.10"
GATEWAY = "169.254.1.1"   # the pods' default gateway (Calico's CNI plugin)

_FELIX_RAW = """*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:cali-PREROUTING - [0:0]
:cali-OUTPUT - [0:0]
:cali-rpf-skip - [0:0]
:cali-from-host-endpoint - [0:0]
:cali-to-host-endpoint - [0:0]
-I PREROUTING 1 -j cali-PREROUTING
-I OUTPUT 1 -j cali-OUTPUT
-A cali-PREROUTING -j MARK --set-xmark 0x0/0x1b0000
-A cali-PREROUTING -i cali+ -j MARK --set-xmark 0x80000/0x80000
-A cali-PREROUTING -m mark --mark 0x80000/0x80000 -j cali-rpf-skip
-A cali-PREROUTING -m mark --mark 0x80000/0x80000 -m rpfilter --validmark --invert -j DROP
-A cali-PREROUTING -m mark --mark 0x0/0x80000 -j cali-from-host-endpoint
-A cali-PREROUTING -m mark --mark 0x10000/0x10000 -j ACCEPT
-A cali-OUTPUT -j MARK --set-xmark 0x0/0x1b0000
-A cali-OUTPUT -j cali-to-host-endpoint
-A cali-OUTPUT -m mark --mark 0x10000/0x10000 -j ACCEPT
COMMIT
"""
# raw: static.go StaticRawPreroutingChain (clear all Calico bits, scratch0 marks what
# comes from a workload, RPFilter on it, host endpoints for the rest), StaticRawOutputChain.

_FELIX_MANGLE = """*mangle
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:cali-PREROUTING - [0:0]
:cali-POSTROUTING - [0:0]
:cali-from-host-endpoint - [0:0]
:cali-to-host-endpoint - [0:0]
-I PREROUTING 1 -j cali-PREROUTING
-I POSTROUTING 1 -j cali-POSTROUTING
-A cali-PREROUTING -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A cali-PREROUTING -m mark --mark 0x10000/0x10000 -j ACCEPT
-A cali-PREROUTING -j cali-from-host-endpoint
-A cali-PREROUTING -m comment --comment "Host endpoint policy accepted packet." -m mark --mark 0x10000/0x10000 -j ACCEPT
-A cali-POSTROUTING -m mark --mark 0x10000/0x10000 -j RETURN
-A cali-POSTROUTING -j MARK --set-xmark 0x0/0x1b0000
-A cali-POSTROUTING -m conntrack --ctstate DNAT -j cali-to-host-endpoint
-A cali-POSTROUTING -m comment --comment "Host endpoint policy accepted packet." -m mark --mark 0x10000/0x10000 -j RETURN
COMMIT
"""
# mangle: static.go StaticManglePreroutingChain, StaticManglePostroutingChain (its DSCP
# rule, which needs Calico's ipsets, left out: it writes no mark).


def _felix_endpoint(direction: str, iface: str) -> str:
    """endpoints.go endpointIptablesChain for a workload with no policy and one profile
    (kns.default): conntrack, clear accept|pass, no encapsulation from workloads, the
    profile, return on its accept, drop."""
    chain, profile = (f"cali-fw-{iface}", "cali-pro-kns.default") if direction == "from" \
        else (f"cali-tw-{iface}", "cali-pri-kns.default")
    encap = ('-A {c} -p udp -m comment --comment "Drop VXLAN encapped packets originating in '
             'workloads" -m multiport --dports 4789 -j DROP\n'
             '-A {c} -p 4 -m comment --comment "Drop IPinIP encapped packets originating in '
             'workloads" -j DROP\n') if direction == "from" else ""
    return (f"-A {chain} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
            f"-A {chain} -m conntrack --ctstate INVALID -j DROP\n"
            f"-A {chain} -j MARK --set-xmark 0x0/0x30000\n"
            + encap.format(c=chain) +
            f"-A {chain} -j {profile}\n"
            f'-A {chain} -m comment --comment "Return if profile accepted" -m mark --mark 0x10000/0x10000 -j RETURN\n'
            f'-A {chain} -m comment --comment "Drop if no profiles matched" -j DROP\n')


_FELIX_FILTER = f"""*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:cali-INPUT - [0:0]
:cali-FORWARD - [0:0]
:cali-OUTPUT - [0:0]
:cali-wl-to-host - [0:0]
:cali-from-wl-dispatch - [0:0]
:cali-to-wl-dispatch - [0:0]
:cali-from-host-endpoint - [0:0]
:cali-to-host-endpoint - [0:0]
:cali-from-hep-forward - [0:0]
:cali-to-hep-forward - [0:0]
:cali-cidr-block - [0:0]
:cali-fw-{CALI_A} - [0:0]
:cali-tw-{CALI_A} - [0:0]
:cali-fw-{CALI_B} - [0:0]
:cali-tw-{CALI_B} - [0:0]
:cali-pri-kns.default - [0:0]
:cali-pro-kns.default - [0:0]
-I INPUT 1 -j cali-INPUT
-I FORWARD 1 -j cali-FORWARD
-I OUTPUT 1 -j cali-OUTPUT
-A FORWARD -m comment --comment "Policy explicitly accepted packet." -m mark --mark 0x10000/0x10000 -j ACCEPT
-A FORWARD -j MARK --set-xmark 0x10000/0x10000
-A cali-INPUT -i cali+ -g cali-wl-to-host
-A cali-INPUT -m mark --mark 0x10000/0x10000 -j ACCEPT
-A cali-INPUT -j MARK --set-xmark 0x0/0x1b0000
-A cali-INPUT -j cali-from-host-endpoint
-A cali-INPUT -m comment --comment "Host endpoint policy accepted packet." -m mark --mark 0x10000/0x10000 -j ACCEPT
-A cali-wl-to-host -j cali-from-wl-dispatch
-A cali-wl-to-host -m comment --comment "Configured DefaultEndpointToHostAction" -j ACCEPT
-A cali-FORWARD -j MARK --set-xmark 0x0/0x1a0000
-A cali-FORWARD -m mark --mark 0x0/0x10000 -j cali-from-hep-forward
-A cali-FORWARD -i cali+ -j cali-from-wl-dispatch
-A cali-FORWARD -o cali+ -j cali-to-wl-dispatch
-A cali-FORWARD -j cali-to-hep-forward
-A cali-FORWARD -j cali-cidr-block
-A cali-OUTPUT -m mark --mark 0x10000/0x10000 -j ACCEPT
-A cali-OUTPUT -o cali+ -j RETURN
-A cali-OUTPUT -j MARK --set-xmark 0x0/0x1b0000
-A cali-OUTPUT -m conntrack ! --ctstate DNAT -j cali-to-host-endpoint
-A cali-OUTPUT -m comment --comment "Host endpoint policy accepted packet." -m mark --mark 0x10000/0x10000 -j ACCEPT
-A cali-from-wl-dispatch -i {CALI_A} -g cali-fw-{CALI_A}
-A cali-from-wl-dispatch -i {CALI_B} -g cali-fw-{CALI_B}
-A cali-from-wl-dispatch -m comment --comment "Unknown interface" -j DROP
-A cali-to-wl-dispatch -o {CALI_A} -g cali-tw-{CALI_A}
-A cali-to-wl-dispatch -o {CALI_B} -g cali-tw-{CALI_B}
-A cali-to-wl-dispatch -m comment --comment "Unknown interface" -j DROP
{_felix_endpoint("from", CALI_A)}{_felix_endpoint("to", CALI_A)}{_felix_endpoint("from", CALI_B)}{_felix_endpoint("to", CALI_B)}-A cali-pri-kns.default -j MARK --set-xmark 0x10000/0x10000
-A cali-pri-kns.default -m mark --mark 0x10000/0x10000 -j RETURN
-A cali-pro-kns.default -j MARK --set-xmark 0x10000/0x10000
-A cali-pro-kns.default -m mark --mark 0x10000/0x10000 -j RETURN
COMMIT
"""
# filter: static.go filterInputChain (workloads to cali-wl-to-host, accepted-already,
# host endpoints), filterWorkloadToHostChain, StaticFilterForwardChains and
# StaticFilterForwardAppendRules (appended to FORWARD: accept on the accept bit, else set
# it for mangle POSTROUTING), filterOutputChain; dispatch.go (the interface dispatch,
# "Unknown interface"); endpoints.go (the cali-fw-/cali-tw- chains); policy.go (a
# profile's allow: set accept, return on it). Felix inserts its jumps at the top of the
# built-in chains (felix/iptables/table.go, ChainInsertMode insert).

_FELIX_NAT = """*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:cali-PREROUTING - [0:0]
:cali-OUTPUT - [0:0]
:cali-POSTROUTING - [0:0]
:cali-fip-dnat - [0:0]
:cali-fip-snat - [0:0]
:cali-nat-outgoing - [0:0]
-I PREROUTING 1 -j cali-PREROUTING
-I OUTPUT 1 -j cali-OUTPUT
-I POSTROUTING 1 -j cali-POSTROUTING
-A cali-PREROUTING -j cali-fip-dnat
-A cali-OUTPUT -j cali-fip-dnat
-A cali-POSTROUTING -j cali-fip-snat
-A cali-POSTROUTING -j cali-nat-outgoing
-A cali-nat-outgoing -m set --match-set cali40masq-ipam-pools src -m set ! --match-set cali40all-ipam-pools dst -j MASQUERADE --random-fully
COMMIT
"""
# nat: static.go StaticNATPreroutingChains / StaticNATOutputChains / StaticNATPostroutingChains;
# nat.go NATOutgoingChain (the pool's masquerade, by ipset; no mark).


def _with_felix_hashes(restore: str) -> str:
    """Each `-A`/`-I` line gets Felix's `-m comment --comment "cali:<hash>"` first."""
    import base64
    import hashlib
    import re
    chained: dict[str, bytes] = {}
    out = []
    for line in restore.splitlines():
        found = re.match(r"(-[AI] (\S+)(?: 1)?) (.*)", line)
        if not found:
            out.append(line)
            continue
        head, chain, rest = found.groups()
        last = chained.get(chain) or hashlib.sha224(chain.encode()).digest()
        chained[chain] = hashlib.sha224(last + rest.encode()).digest()
        tag = base64.urlsafe_b64encode(chained[chain]).decode().rstrip("=")[:16]
        out.append(f'{head} -m comment --comment "cali:{tag}" {rest}')
    return "\n".join(out) + "\n"


FELIX = _with_felix_hashes(_FELIX_RAW + _FELIX_MANGLE + _FELIX_FILTER + _FELIX_NAT)

# kube-proxy, iptables mode (kubernetes pkg/proxy/iptables/proxier.go, as KUBE_PROXY in
# test_marks_packets): a ClusterIP service on pod B, its KUBE-MARK-MASQ for sources
# outside the cluster CIDR (--cluster-cidr 192.168.0.0/16, Calico's default pool) and
# for hairpin, and filter's KUBE-FORWARD accepting what it marked 0x4000.
CSVC, CSEP = "KUBE-SVC-CALICOAAAAAAAAAA", "KUBE-SEP-CALICOAAAAAAAAAA"
KUBE_PROXY_CLUSTER_IP = f"""*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:{CSVC} - [0:0]
:{CSEP} - [0:0]
{KUBE_PROXY_FIXED}
-A KUBE-SERVICES -d {CLUSTER_IP}/32 -p udp -m comment --comment "default/web:udp cluster IP" -m udp --dport {SERVICE_PORT} -j {CSVC}
-A {CSVC} ! -s 192.168.0.0/16 -d {CLUSTER_IP}/32 -p udp -m comment --comment "default/web:udp cluster IP" -m udp --dport {SERVICE_PORT} -j KUBE-MARK-MASQ
-A {CSVC} -m comment --comment "default/web:udp -> {POD_B}:{SERVICE_PORT}" -j {CSEP}
-A {CSEP} -s {POD_B}/32 -m comment --comment "default/web:udp" -j KUBE-MARK-MASQ
-A {CSEP} -p udp -m comment --comment "default/web:udp" -m udp -j DNAT --to-destination {POD_B}:{SERVICE_PORT}
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-FORWARD - [0:0]
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
"""


@pytest.fixture
def calico_lab(netns):
    """node with two workloads, each behind a `cali…` veth, routed as Calico's CNI plugin
    does (a /32 on the pod's eth0, a default route via 169.254.1.1, a /32 route to the
    pod on its veth in the node); the node's own address on lo. Deleted afterwards."""
    node = netns
    pods = {}
    try:
        for iface, address in ((CALI_A, POD_A), (CALI_B, POD_B)):
            pod = pods[address] = new_netns("fwt-cali")
            sh(node, "ip", "link", "add", iface, "type", "veth", "peer", "name", "eth0",
               "netns", pod)
            sh(node, "ip", "link", "set", iface, "up")
            sh(node, "ip", "route", "add", f"{address}/32", "dev", iface)
            sh(pod, "ip", "addr", "add", f"{address}/32", "dev", "eth0")
            sh(pod, "ip", "link", "set", "eth0", "up")
            sh(pod, "ip", "route", "add", GATEWAY, "dev", "eth0", "scope", "link")
            sh(pod, "ip", "route", "add", "default", "via", GATEWAY, "dev", "eth0")
            # Calico answers for the gateway by proxy ARP; a fixed neighbour does the same
            mac = sh(node, "cat", f"/sys/class/net/{iface}/address").stdout.strip()
            sh(pod, "ip", "neigh", "add", GATEWAY, "lladdr", mac, "dev", "eth0", "nud", "permanent")
        sh(node, "ip", "link", "set", "lo", "up")
        sh(node, "ip", "addr", "add", f"{HOST_IP}/32", "dev", "lo")
        sh(node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        yield node, pods[POD_A], pods[POD_B]
    finally:
        for pod in pods.values():
            delete_netns(pod)


def received(sender_ns: str, receiver_ns: str, address: str, port: int, count: int = 3) -> int:
    """Datagrams sent from `sender_ns` to `address:port` that a socket bound on `port` in
    `receiver_ns` receives."""
    def send() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(count):
                s.sendto(b"fwgate", (address, port))
    receiver = in_netns(receiver_ns, udp_listener, "0.0.0.0", port)
    try:
        in_netns(sender_ns, send)
        return _received(receiver, count)
    finally:
        receiver.close()


def calico_node(node: str) -> None:
    for ipset in ("cali40masq-ipam-pools", "cali40all-ipam-pools"):
        sh(node, "ipset", "create", ipset, "hash:net")
        sh(node, "ipset", "add", ipset, "192.168.0.0/16")
    sh(node, "iptables-restore", "-n", input=KUBE_PROXY_CLUSTER_IP)
    sh(node, "iptables-restore", "-n", input=KUBELET)
    sh(node, "iptables-restore", "-n", input=FELIX)   # last: its jumps stay first


def test_a_calico_node_with_kube_proxy_and_kubelet_raises_no_alarm(calico_lab):
    node, pod_a, pod_b = calico_lab
    # without any rules, the lab carries all three
    assert received(pod_a, node, HOST_IP, 82) == 3
    assert received(pod_a, pod_b, POD_B, 83) == 3
    calico_node(node)
    named = owners(node)
    assert set(named.values()) == {"calico", "kube-proxy", "kubelet"}, named
    assert all(owner == "calico" for ref, owner in named.items() if "cali-" in ref), named
    code, harms = conflicts(node)
    assert (code, harms) == (0, []), harms
    assert conflicts(node, everything=True) == (0, [])   # disjoint bits: not even shared
    # pod → host, pod → pod through the node, pod → a ClusterIP service (DNAT to pod B)
    assert received(pod_a, node, HOST_IP, 84) == 3
    assert received(pod_a, pod_b, POD_B, 85) == 3
    assert received(pod_a, pod_b, CLUSTER_IP, SERVICE_PORT) == 3
    # and it is Felix that lets them through: without its profile's accept, all dropped
    sh(node, "iptables", "-F", "cali-pro-kns.default")
    assert (received(pod_a, node, HOST_IP, 86), received(pod_a, pod_b, POD_B, 87)) == (0, 0)


TAILNET_PEER = "100.101.0.2"


def test_calico_and_tailscale_pods_lose_the_tailnet(calico_lab):
    """Felix marks every packet from a workload with its scratch bit 0x80000 in raw
    PREROUTING (for its reverse-path check) and leaves it set; Tailscale's routing rules
    read 0x80000/0xff0000 as "bypass Tailscale" (its own sockets' mark) before its table 52.
    So a pod's packet to a tailnet peer is looked up in main and default, then hits
    Tailscale's `unreachable`: lost. Without Felix's mark, delivered through tailscale0."""
    node, pod_a, _ = calico_lab
    calico_node(node)
    tailscale(node)
    peer = new_netns("fwt-ts")
    try:
        sh(node, "ip", "link", "set", "tailscale0p", "netns", peer)
        sh(node, "ip", "link", "set", "tailscale0", "up")
        sh(node, "ip", "route", "add", f"{TAILNET_PEER}/32", "dev", "tailscale0", "table", "52")
        sh(peer, "ip", "addr", "add", f"{TAILNET_PEER}/32", "dev", "tailscale0p")
        sh(peer, "ip", "link", "set", "tailscale0p", "up")
        sh(peer, "ip", "route", "add", "192.168.0.0/16", "dev", "tailscale0p")
        named = owners(node)
        assert "unknown" not in named.values(), named
        code, harms = conflicts(node)
        assert code == 1
        assert {(c["writer"]["owner"], c["writer"]["chain"], c["reader"]["owner"], c["bits"])
                for c in harms} == {("calico", "cali-PREROUTING", "tailscale", "0x80000")}, harms
        assert {c["reader"]["kind"] for c in harms} == {"ip rule"}, harms
        assert any("unreachable" in c["effect"] for c in harms), harms
        assert received(pod_a, peer, TAILNET_PEER, 88) == 0
        # without Felix's scratch mark on workload traffic (its rule deleted): delivered
        sh(node, "iptables", "-t", "raw", "-D", "cali-PREROUTING", "2")
        assert "cali+" not in sh(node, "iptables", "-t", "raw", "-S", "cali-PREROUTING").stdout
        assert received(pod_a, peer, TAILNET_PEER, 89) == 3
    finally:
        delete_netns(peer)


def test_calico_sets_its_accept_bit_back_so_netbirds_mark_survives(calico_lab):
    """Felix's endpoint chain clears its accept and pass bits 0x30000, which Netbird's
    0x1bd20 holds (0x10000), but its profile sets the accept bit again before the packet
    goes on (it is dropped otherwise): Netbird's exact test still sees 0x1bd20. Not
    reported, and a peer's datagrams to a hostPort on pod A are delivered with Calico's
    FORWARD before Netbird's (Calico's table registered last) and after it."""
    node, pod_a, _ = calico_lab
    peer = new_netns("fwt-nb")
    try:
        sh(node, "ip", "link", "add", "wt0", "type", "veth", "peer", "name", "wt0p", "netns", peer)
        sh(node, "ip", "addr", "add", f"{NODE_WT0}/16", "dev", "wt0")
        sh(node, "ip", "link", "set", "wt0", "up")
        sh(peer, "ip", "addr", "add", f"{PEER_WT0}/16", "dev", "wt0p")
        sh(peer, "ip", "link", "set", "wt0p", "up")
        sh(peer, "ip", "route", "add", "192.168.0.0/16", "via", NODE_WT0)
        sh(node, "nft", "-f", "-", input=netbird())
        sh(node, "iptables-restore", "-n", input=PORTMAP.replace(POD, POD_A).replace(
            "10.42.0.0/24", "192.168.0.0/16"))
        calico_node(node)   # newer than Netbird's table: Calico's FORWARD runs first
        _, everything = conflicts(node, everything=True)
        assert not [c for c in everything if c["writer"]["owner"] == "calico"
                    and c["reader"]["owner"] == "netbird"], everything
        assert received(peer, pod_a, NODE_WT0, HOSTPORT) == 3
        assert counted(node, "netbird", "netbird-acl-forward-filter", "drop") == 0
        # were the bit not set again (a profile that accepts outright), Netbird drops them
        sh(node, "iptables", "-F", "cali-pri-kns.default")
        sh(node, "iptables", "-A", "cali-pri-kns.default", "-j", "ACCEPT")
        assert received(peer, pod_a, NODE_WT0, HOSTPORT) == 0
        assert counted(node, "netbird", "netbird-acl-forward-filter", "drop") == 3
        sh(node, "iptables", "-F", "cali-pri-kns.default")
        for line in FELIX.splitlines():   # Calico's own profile back
            if line.startswith("-A cali-pri-kns.default "):
                sh(node, "iptables", "-t", "filter", *shlex.split(line))
        sh(node, "nft", "delete", "table", "ip", "netbird")   # now Netbird's runs first
        sh(node, "nft", "-f", "-", input=netbird())
        assert received(peer, pod_a, NODE_WT0, HOSTPORT) == 3
        assert counted(node, "netbird", "netbird-acl-forward-filter", "drop") == 0   # new table
    finally:
        delete_netns(peer)



def netbird_peer(node: str) -> str:
    """A peer namespace behind wt0 (100.64.0.2 → the node's 100.64.0.1), routing the pod
    network through the node."""
    peer = new_netns("fwt-nb")
    sh(node, "ip", "link", "add", "wt0", "type", "veth", "peer", "name", "wt0p", "netns", peer)
    sh(node, "ip", "addr", "add", f"{NODE_WT0}/16", "dev", "wt0")
    sh(node, "ip", "link", "set", "wt0", "up")
    sh(peer, "ip", "addr", "add", f"{PEER_WT0}/16", "dev", "wt0p")
    sh(peer, "ip", "link", "set", "wt0p", "up")
    sh(peer, "ip", "route", "add", "192.168.0.0/16", "via", NODE_WT0)
    return peer


def _udp_frame(source_mac: str, dest_mac: str, source: str, dest: str, port: int) -> bytes:
    """An Ethernet frame holding one UDP datagram (no UDP checksum)."""
    import struct
    payload = b"fwgate"
    udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, socket.IPPROTO_UDP,
                         0, socket.inet_aton(source), socket.inet_aton(dest))
    total = sum(struct.unpack("!10H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    header = header[:10] + struct.pack("!H", ~total & 0xFFFF) + header[12:]
    return (bytes.fromhex(dest_mac.replace(":", "")) + bytes.fromhex(source_mac.replace(":", ""))
            + b"\x08\x00" + header + udp)


def to_node_loopback(node: str, peer: str, port: int, count: int = 3) -> int:
    """Datagrams the peer puts on wt0 for 127.0.0.1:`port` (written as frames: the peer's
    own loopback would take them otherwise) that a socket on the node's 127.0.0.1
    receives."""
    node_mac = sh(node, "cat", "/sys/class/net/wt0/address").stdout.strip()
    peer_mac = sh(peer, "cat", "/sys/class/net/wt0p/address").stdout.strip()
    frame = _udp_frame(peer_mac, node_mac, PEER_WT0, "127.0.0.1", port)

    def transmit() -> None:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
            s.bind(("wt0p", 0))
            for _ in range(count):
                s.send(frame)
    receiver = in_netns(node, udp_listener, "127.0.0.1", port)
    try:
        in_netns(peer, transmit)
        return _received(receiver, count)
    finally:
        receiver.close()


def test_calico_beside_netbird_lets_peers_past_kubelets_localnet_block(calico_lab):
    """Netbird's 0x1bd20 holds Felix's accept bit 0x10000. cali-INPUT, first in INPUT,
    accepts what carries it, so kubelet's KUBE-FIREWALL after it never runs for what
    Netbird marked: its "block incoming localnet connections" (the fix for CVE-2020-8558,
    needed because kube-proxy sets route_localnet=1 for localhost node ports: kubernetes
    pkg/proxy/iptables/proxier.go) no longer keeps a peer from the node's 127.0.0.1. A
    harm, with packets: dropped by KUBE-FIREWALL without Netbird's table, delivered with
    it. Felix's other accept-bit tests (mangle cali-PREROUTING / cali-POSTROUTING,
    cali-FORWARD's host endpoint jump, FORWARD's "Policy explicitly accepted") skip only
    host endpoint chains, empty on this node: latent, and a peer's hostPort traffic
    through all of them is delivered."""
    node, pod_a, _ = calico_lab
    peer = netbird_peer(node)
    try:
        sh(node, "sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1")
        sh(node, "iptables-restore", "-n", input=PORTMAP.replace(POD, POD_A).replace(
            "10.42.0.0/24", "192.168.0.0/16"))
        calico_node(node)
        assert to_node_loopback(node, peer, 9001) == 0
        assert blocked_localnet(node) == 3

        sh(node, "nft", "-f", "-", input=netbird())   # newer: its mangle chain runs first
        code, harms = conflicts(node)
        assert code == 1
        reported = {(c["writer"]["owner"], c["reader"]["owner"], c["reader"]["table"],
                     c["reader"]["chain"], c["effect"]) for c in harms}
        assert ("netbird", "calico", "filter", "cali-INPUT", "accepted unexpectedly") \
            in reported, harms
        assert not [c for c in harms if c["reader"]["owner"] == "calico"
                    and c["reader"]["chain"] != "cali-INPUT"], harms
        _, everything = conflicts(node, everything=True)
        latent = {(c["reader"]["table"], c["reader"]["chain"], c["effect"])
                  for c in everything if c["writer"]["owner"] == "netbird"
                  and c["reader"]["owner"] == "calico" and c["severity"] == "shared"
                  and c["why_shared"].startswith("latent: the rules calico skips")}
        assert latent == {("mangle", "cali-PREROUTING", "accepted unexpectedly"),
                          ("mangle", "cali-POSTROUTING", "returns early"),
                          ("filter", "cali-FORWARD", "jump to cali-from-hep-forward missed"),
                          ("filter", "FORWARD", "accepted unexpectedly")}, everything

        assert to_node_loopback(node, peer, 9002) == 3
        assert blocked_localnet(node) == 3   # no more than before
        assert counted(node, "filter", "cali-INPUT", "accept") == 3
        # the latent ones: the peer's hostPort traffic passes every one of them
        assert received(peer, pod_a, NODE_WT0, HOSTPORT) == 3
    finally:
        delete_netns(peer)


def blocked_localnet(node: str) -> int:
    """Packets kubelet's KUBE-FIREWALL dropped as incoming localnet connections."""
    listing = json.loads(sh(node, "nft", "-j", "list", "chain", "ip", "filter",
                            "KUBE-FIREWALL").stdout)
    for item in listing["nftables"]:
        exprs = item.get("rule", {}).get("expr", [])
        if "127.0.0.0" in json.dumps(exprs) and any("drop" in e for e in exprs):
            return next(e["counter"]["packets"] for e in exprs if "counter" in e)
    raise AssertionError("no localnet block in KUBE-FIREWALL")


ROUTED_PEER = "100.64.0.3"   # a peer with a route to the pod network, no ACL to the node


def netbird_routing_the_pod_network() -> str:
    """Netbird's table with a network route to the pod network (10.42.0.0/24): its route
    ACL appended to netbird-rt-fwd (netbirdio/netbird v0.70 client/firewall/nftables/
    router_linux.go AddRouteFiltering: source and destination networks, then the action)."""
    table = netbird()
    route_chain = "  chain netbird-rt-fwd {\n    ct state established,related counter accept\n"
    assert route_chain in table
    return table.replace(route_chain, route_chain
                         + "    ip saddr 100.64.0.0/16 ip daddr 10.42.0.0/24 counter accept\n")


def send_from(peer: str, source: str, port: int, count: int = 3) -> None:
    """Datagrams from `source` (one new socket: one new connection) to the node's wt0
    address."""
    def work() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((source, 0))
            for _ in range(count):
                s.sendto(b"fwgate", (NODE_WT0, port))
    in_netns(peer, work)
    time.sleep(0.3)   # as test_marks_packets.send: let the pod's counters see them


def test_wg_quick_restores_portmaps_masquerade_bit_onto_a_routed_peers_flow(lab):
    """Netbird marks every new connection from wt0 0x1bd10 in ct mark; wg-quick's
    premangle (`meta mark set ct mark`), when its table is the older one, runs after
    Netbird's chain and puts 0x1bd10 into the packet's mark — which holds portmap's
    masquerade bit 0x2000. A routed peer (Netbird's route ACL to the pod network, no
    0x1bd20 for it) reaching a hostPort is then masqueraded by CNI-HOSTPORT-MASQ: the pod
    sees the node, not the peer. Without wg-quick's table, or with it the newer one (its
    restore runs first, on a connection not yet marked), the pod sees the peer."""
    node, peer, pod = lab
    sh(peer, "ip", "addr", "add", f"{ROUTED_PEER}/16", "dev", "wt0p")
    sh(node, "iptables-restore", "-n", input=PORTMAP)
    sh(node, "nft", "-f", "-", input=netbird_routing_the_pod_network())
    send_from(peer, ROUTED_PEER, HOSTPORT)
    assert (arrived(pod), masqueraded(pod)) == (3, 0)

    sh(node, "nft", "delete", "table", "ip", "netbird")
    wg_quick(node)
    sh(node, "nft", "-f", "-", input=netbird_routing_the_pod_network())   # newer: runs first
    code, harms = conflicts(node)
    assert code == 1
    assert ("wg-quick", "cni-portmap", "0x2000",
            "masquerade skipped or masqueraded unexpectedly") in pairs(harms), harms
    send_from(peer, ROUTED_PEER, HOSTPORT)
    assert (arrived(pod), masqueraded(pod)) == (6, 3)

    # wg-quick's table the newer one: its restore runs before Netbird marks the connection
    sh(node, "nft", "delete", "table", "ip", "wg-quick-wg0")
    sh(node, "nft", "-f", "-", input=WG_QUICK)
    send_from(peer, ROUTED_PEER, HOSTPORT)
    assert (arrived(pod), masqueraded(pod)) == (9, 3)


# A host endpoint on wt0 with a forward policy that admits nothing, as Felix renders it
# (felix/rules/dispatch.go: the host endpoint dispatch by interface; endpoints.go
# HostEndpointToIptablesChains: "Drop if no policies passed packet").
HOST_ENDPOINT_WT0 = """*filter
:cali-fhfw-wt0 - [0:0]
-A cali-from-hep-forward -i wt0 -g cali-fhfw-wt0
-A cali-fhfw-wt0 -j MARK --set-xmark 0x0/0x30000
-A cali-fhfw-wt0 -m comment --comment "Drop if no policies passed packet" -j DROP
COMMIT
"""


def test_calico_host_endpoint_policy_makes_netbirds_accept_bit_a_harm(calico_lab):
    """With a host endpoint on wt0 whose forward policy drops everything, Felix's
    `--mark 0x0/0x10000 -j cali-from-hep-forward` is no longer latent: a peer Netbird
    marks 0x1bd20 (which holds the accept bit) skips the host endpoint policy and reaches
    a hostPort, while a routed peer Netbird does not mark is dropped by it."""
    node, pod_a, _ = calico_lab
    peer = netbird_peer(node)
    try:
        sh(peer, "ip", "addr", "add", f"{ROUTED_PEER}/16", "dev", "wt0p")
        sh(node, "iptables-restore", "-n", input=PORTMAP.replace(POD, POD_A).replace(
            "10.42.0.0/24", "192.168.0.0/16"))
        calico_node(node)
        sh(node, "nft", "-f", "-", input=netbird_routing_the_pod_network().replace(
            "10.42.0.0/24", "192.168.0.0/16"))
        _, everything = conflicts(node, everything=True)
        assert [c["severity"] for c in everything if c["reader"]["chain"] == "cali-FORWARD"] \
            == ["shared"], everything
        sh(node, "iptables-restore", "-n", input=_with_felix_hashes(HOST_ENDPOINT_WT0))
        code, harms = conflicts(node)
        assert code == 1
        assert ("netbird", "calico", "filter", "cali-FORWARD",
                "jump to cali-from-hep-forward missed") in {
            (c["writer"]["owner"], c["reader"]["owner"], c["reader"]["table"],
             c["reader"]["chain"], c["effect"]) for c in harms}, harms
        assert received(peer, pod_a, NODE_WT0, HOSTPORT) == 3            # marked: skips it
        assert counted(node, "filter", "cali-fhfw-wt0", "drop") == 0

        def routed() -> int:   # the routed peer's datagrams to the same hostPort
            with_pod = in_netns(pod_a, udp_listener, "0.0.0.0", HOSTPORT)
            try:
                send_from(peer, ROUTED_PEER, HOSTPORT)
                return _received(with_pod)
            finally:
                with_pod.close()
        assert routed() == 0
        assert counted(node, "filter", "cali-fhfw-wt0", "drop") == 3
    finally:
        delete_netns(peer)


def udp_listener(address: str, port: int, timeout: float = 1) -> socket.socket:
    """A UDP socket bound to `address:port` whose receives give up after `timeout` s."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((address, port))
    s.settimeout(timeout)
    return s


def _received(receiver: socket.socket, count: float = math.inf) -> int:
    """Datagrams the socket receives, up to `count`, until its timeout."""
    got = 0
    try:
        while got < count:
            receiver.recvfrom(64)
            got += 1
    except TimeoutError:
        pass
    return got

