"""Mark conflicts proven with packets, in namespaces the test makes.

    peer ── wt0p/wt0 ── node ── cni0/eth0 ── pod (10.42.0.5)

The node holds Netbird's chains (written with nft, as Netbird v0.70's
client/firewall/nftables writes them), kube-router's network-policy chains and CNI
portmap's or kube-proxy's NAT (written with the real iptables, from the rules those
projects' sources generate). The peer sends UDP datagrams to the node's wt0 address;
a hostPort (portmap) or a service (kube-proxy) DNATs them to the pod. Counters say
where they went: the pod's input, or Netbird's drop.
"""
from __future__ import annotations

import json
import socket
import time

import pytest

from helpers import delete_netns, fwgate_cmd, in_netns, new_netns, sh
from fwgate.marks import Conflict, conflict_text, find_conflicts

NODE_WT0, PEER_WT0, POD = "100.64.0.1", "100.64.0.2", "10.42.0.5"
HOSTPORT, SERVICE_PORT = 80, 81


def netbird(masked: bool = False) -> str:
    """Netbird's table: mangle prerouting marks peers' traffic to local addresses
    (redirected, e.g. by a hostPort) 0x1bd20 (acl_linux.go createPreroutingRule); the
    forward filter accepts that mark, sends wt0 traffic to its route chain, then drops
    it (createDefaultChains, addFwmarkToForward); conntrack marks (setupDataPlaneMark);
    masquerade by mark (addPostroutingRules). masked: the same, with the mark kept to
    the low 12 bits and tested under 0xfff."""
    if masked:
        set_redirected = "meta mark set meta mark & 0xfffff000 | 0x00000d20"
        is_redirected = "meta mark & 0x00000fff == 0x00000d20"
        is_masq, is_masq_return = "meta mark & 0x00000fff == 0x00000d21", \
            "meta mark & 0x00000fff == 0x00000d22"
    else:
        set_redirected = "meta mark set 0x0001bd20"
        is_redirected = "meta mark 0x0001bd20"
        is_masq, is_masq_return = "meta mark 0x0001bd21", "meta mark 0x0001bd22"
    return f"""
table ip netbird {{
  chain netbird-rt-fwd {{
    ct state established,related counter accept
  }}
  chain netbird-acl-input-rules {{
    ct state established,related counter accept
    ip saddr {PEER_WT0} accept
  }}
  chain netbird-acl-input-filter {{
    type filter hook input priority filter; policy accept;
    iifname "wt0" jump netbird-acl-input-rules
    iifname "wt0" drop
  }}
  chain netbird-acl-forward-filter {{
    type filter hook forward priority filter; policy accept;
    {is_redirected} accept
    iifname "wt0" jump netbird-rt-fwd
    iifname "wt0" counter drop
  }}
  chain netbird-mangle-prerouting {{
    type filter hook prerouting priority mangle; policy accept;
    iifname "wt0" ip saddr {PEER_WT0} fib daddr type local {set_redirected}
    iifname "wt0" ct state new ct mark set 0x0001bd10
  }}
  chain netbird-mangle-postrouting {{
    type filter hook postrouting priority mangle; policy accept;
    oifname "wt0" ct state new ct mark set 0x0001bd11
  }}
  chain netbird-rt-postrouting {{
    type nat hook postrouting priority srcnat - 1; policy accept;
    {is_masq} oifname != "lo" counter masquerade
    {is_masq_return} oifname "wt0" counter masquerade
  }}
}}
"""


POD_FW = "KUBE-POD-FW-ABCDEFGHIJKLMNOP"
POD_NAME = "name:traefik namespace: kube-system"
# kube-router (k3s-io/kube-router) pkg/controllers/netpol: the top-level jumps
# (ensureTopLevelChains), KUBE-NWPLCY-COMMON and -DEFAULT (network_policy_controller.go),
# the pod firewall with no policy selecting the pod (pod.go: setupPodNetpolRules,
# interceptPodInboundTraffic/OutboundTraffic, dropUnmarkedTrafficRules, the 0x20000 mark)
# and the explicit accept (ensureExplicitAccept). Restored without --noflush, as each sync.
KUBE_ROUTER = f"""*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-ROUTER-FORWARD - [0:0]
:KUBE-ROUTER-INPUT - [0:0]
:KUBE-ROUTER-OUTPUT - [0:0]
:KUBE-NWPLCY-COMMON - [0:0]
:KUBE-NWPLCY-DEFAULT - [0:0]
:{POD_FW} - [0:0]
-A INPUT -m comment --comment "kube-router netpol - 4IA2OSFRMVNDXBVV" -j KUBE-ROUTER-INPUT
-A FORWARD -m comment --comment "kube-router netpol - TEMCG2JMHZYE7H7T" -j KUBE-ROUTER-FORWARD
-A OUTPUT -m comment --comment "kube-router netpol - VEAAIY32XVBHCSCY" -j KUBE-ROUTER-OUTPUT
-A KUBE-NWPLCY-COMMON -m comment --comment "rule to drop invalid state for pod" -m conntrack --ctstate INVALID -j DROP
-A KUBE-NWPLCY-COMMON -m comment --comment "rule for stateful firewall for pod" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A KUBE-NWPLCY-COMMON -p icmp -m comment --comment "allow icmp echo requests" -m icmp --icmp-type 8 -j ACCEPT
-A KUBE-NWPLCY-DEFAULT -m comment --comment "rule to mark traffic matching a network policy" -j MARK --set-xmark 0x10000/0x10000
-A {POD_FW} -m comment --comment "common bi-directional traffic policy rules" -j KUBE-NWPLCY-COMMON
-A {POD_FW} -d {POD} -m comment --comment "rule to permit the traffic traffic to pods when source is the pod's local node" -m addrtype --src-type LOCAL -j ACCEPT
-A {POD_FW} -s {POD} -m comment --comment "run through default egress network policy chain" -j KUBE-NWPLCY-DEFAULT
-A {POD_FW} -d {POD} -m comment --comment "run through default ingress network policy chain" -j KUBE-NWPLCY-DEFAULT
-A {POD_FW} -m comment --comment "rule to log dropped traffic POD {POD_NAME}" -m mark ! --mark 0x10000/0x10000 -m limit --limit 10/min --limit-burst 10 -j NFLOG --nflog-group 100
-A {POD_FW} -m comment --comment "rule to REJECT traffic destined for POD {POD_NAME}" -m mark ! --mark 0x10000/0x10000 -j REJECT --reject-with icmp-port-unreachable
-A {POD_FW} -j MARK --set-xmark 0x0/0x10000
-A {POD_FW} -m comment --comment "set mark to ACCEPT traffic that comply to network policies" -j MARK --set-xmark 0x20000/0x20000
-A KUBE-ROUTER-FORWARD -d {POD} -m comment --comment "rule to jump traffic destined to POD {POD_NAME} to chain {POD_FW}" -j {POD_FW}
-A KUBE-ROUTER-FORWARD -d {POD} -m physdev --physdev-is-bridged -m comment --comment "rule to jump traffic destined to POD {POD_NAME} to chain {POD_FW}" -j {POD_FW}
-A KUBE-ROUTER-FORWARD -s {POD} -m comment --comment "rule to jump traffic from POD {POD_NAME} to chain {POD_FW}" -j {POD_FW}
-A KUBE-ROUTER-OUTPUT -d {POD} -m comment --comment "rule to jump traffic destined to POD {POD_NAME} to chain {POD_FW}" -j {POD_FW}
-A KUBE-ROUTER-FORWARD -m comment --comment "rule to explicitly ACCEPT traffic that comply to network policies" -m mark --mark 0x20000/0x20000 -j ACCEPT
-A KUBE-ROUTER-OUTPUT -m comment --comment "rule to explicitly ACCEPT traffic that comply to network policies" -m mark --mark 0x20000/0x20000 -j ACCEPT
COMMIT
"""

# CNI portmap (containernetworking/plugins plugins/meta/portmap/portmap_iptables.go): a
# hostPort, as k3s's traefik has, with its hairpin mark 0x2000 (markMasqBit 13).
PORTMAP = f"""*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:CNI-HOSTPORT-DNAT - [0:0]
:CNI-HOSTPORT-SETMARK - [0:0]
:CNI-HOSTPORT-MASQ - [0:0]
:CNI-DN-0ffdff59029f5c5556a11 - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ
-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE
-A CNI-HOSTPORT-SETMARK -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000
-A CNI-HOSTPORT-DNAT -p udp -m comment --comment "dnat name: \\"cbr0\\" id: \\"deb7a2b32ae6\\"" -m multiport --dports {HOSTPORT} -j CNI-DN-0ffdff59029f5c5556a11
-A CNI-DN-0ffdff59029f5c5556a11 -s 10.42.0.0/24 -p udp -m udp --dport {HOSTPORT} -j CNI-HOSTPORT-SETMARK
-A CNI-DN-0ffdff59029f5c5556a11 -s 127.0.0.1/32 -p udp -m udp --dport {HOSTPORT} -j CNI-HOSTPORT-SETMARK
-A CNI-DN-0ffdff59029f5c5556a11 -p udp -m udp --dport {HOSTPORT} -j DNAT --to-destination {POD}:{HOSTPORT}
COMMIT
"""

# kube-proxy, iptables mode (kubernetes pkg/proxy/iptables/proxier.go): a service on an
# external IP (the node's wt0 address) with one endpoint, the pod; KUBE-MARK-MASQ ORs
# 0x4000 (--iptables-masquerade-bit 14), KUBE-POSTROUTING masquerades what carries it.
SVC, EXT, SEP = "KUBE-SVC-WEBAAAAAAAAAAAAA", "KUBE-EXT-WEBAAAAAAAAAAAAA", "KUBE-SEP-WEBAAAAAAAAAAAAA"
KUBE_PROXY = f"""*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:{SVC} - [0:0]
:{EXT} - [0:0]
:{SEP} - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-SERVICES -d {NODE_WT0}/32 -p udp -m comment --comment "default/web:udp external IP" -m udp --dport {SERVICE_PORT} -j {EXT}
-A {EXT} -m comment --comment "masquerade traffic for default/web:udp external destinations" -j KUBE-MARK-MASQ
-A {EXT} -j {SVC}
-A {SVC} -m comment --comment "default/web:udp -> {POD}:{SERVICE_PORT}" -j {SEP}
-A {SEP} -s {POD}/32 -m comment --comment "default/web:udp" -j KUBE-MARK-MASQ
-A {SEP} -p udp -m comment --comment "default/web:udp" -m udp -j DNAT --to-destination {POD}:{SERVICE_PORT}
COMMIT
"""


@pytest.fixture
def lab(netns):
    """node (the conftest's namespace), peer and pod, wired; all deleted afterwards."""
    node = netns
    peer, pod = new_netns("fwt-peer"), new_netns("fwt-pod")
    try:
        sh(node, "ip", "link", "add", "wt0", "type", "veth", "peer", "name", "wt0p", "netns", peer)
        sh(node, "ip", "link", "add", "cni0", "type", "veth", "peer", "name", "eth0", "netns", pod)
        sh(node, "ip", "addr", "add", f"{NODE_WT0}/16", "dev", "wt0")
        sh(node, "ip", "addr", "add", "10.42.0.1/24", "dev", "cni0")
        for link in ("lo", "wt0", "cni0"):
            sh(node, "ip", "link", "set", link, "up")
        sh(node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        sh(peer, "ip", "addr", "add", f"{PEER_WT0}/16", "dev", "wt0p")
        sh(peer, "ip", "link", "set", "wt0p", "up")
        sh(pod, "ip", "addr", "add", f"{POD}/24", "dev", "eth0")
        sh(pod, "ip", "link", "set", "eth0", "up")
        sh(pod, "ip", "route", "add", "default", "via", "10.42.0.1")
        # what reaches the pod, counted there; and how much of it the node masqueraded
        sh(pod, "nft", "-f", "-", input="""table ip probe {
  chain in {
    type filter hook input priority 0; policy accept;
    udp dport { 80, 81 } counter
  }
  chain masqueraded {
    type filter hook input priority 0; policy accept;
    ip saddr 10.42.0.1 udp dport { 80, 81 } counter
  }
}
""")
        yield node, peer, pod
    finally:
        delete_netns(peer)
        delete_netns(pod)


def send(peer: str, port: int, count: int = 3) -> None:
    """UDP datagrams from the peer to the node's wt0 address."""
    def work() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(count):
                s.sendto(b"fwgate", (NODE_WT0, port))
                time.sleep(0.02)
    in_netns(peer, work)
    time.sleep(0.3)


def counter(netns: str, table: str, chain: str, verdict: str | None = None) -> int:
    """Packets through the first counting rule of the chain (ending in `verdict`)."""
    listing = json.loads(sh(netns, "nft", "-j", "list", "chain", "ip", table, chain).stdout)
    for item in listing["nftables"]:
        exprs = item.get("rule", {}).get("expr", [])
        counts = [e["counter"]["packets"] for e in exprs if "counter" in e]
        if counts and (verdict is None or any(verdict in e for e in exprs)):
            return counts[0]
    raise AssertionError(f"no counting rule in {table} {chain}")


def arrived(pod: str) -> int:
    return counter(pod, "probe", "in")


def masqueraded(pod: str) -> int:
    return counter(pod, "probe", "masqueraded")


def dropped_by_netbird(node: str) -> int:
    return counter(node, "netbird", "netbird-acl-forward-filter", "drop")


def conflicts_of(node: str) -> tuple[Conflict, ...]:
    from fwgate.adapters.nfsock import NfSocket
    from fwgate.adapters.nft import snapshot

    def take():
        with NfSocket() as sock:
            return snapshot(sock, families=("ip", "ip6", "inet"))
    return find_conflicts(in_netns(node, take))


def named(conflicts, writer: str, reader_chain: str, bits: int) -> Conflict:
    found = [c for c in conflicts if c.writer.owner == writer and c.bits == bits
             and c.reader.rule.chain == reader_chain]
    assert found, "\n".join(conflict_text(c) for c in conflicts)
    return found[0]


def test_netbird_6022_dropped_named_beforehand_and_the_order_flips(lab):
    node, peer, pod = lab
    sh(node, "iptables-restore", "-n", input=PORTMAP)
    sh(node, "nft", "-f", "-", input=netbird())
    sh(node, "iptables-restore", input=KUBE_ROUTER)   # registered last: its FORWARD runs first

    found = conflicts_of(node)
    for bits, change in ((0x10000, "clear bits 0x10000"), (0x20000, "set bits 0x20000")):
        c = named(found, "kube-router", "netbird-acl-forward-filter", bits)
        assert (c.key, c.order, c.path, c.reader.owner) == ("meta", "tie", ("forward",), "netbird")
        assert c.writer.rule.chain == POD_FW and change in c.writer.what
        assert c.effect == "accept missed"
        assert c.then.startswith("then drop by ip netbird netbird-acl-forward-filter")
        assert c.reader.what == "meta mark == 0x1bd20 → accept"

    send(peer, HOSTPORT)
    assert (dropped_by_netbird(node), arrived(pod)) == (3, 0)

    # Netbird's 0x1bd20 carries portmap's masquerade bit 0x2000 (markMasqBit 13)
    c = named(found, "netbird", "CNI-HOSTPORT-MASQ", 0x2000)
    assert (c.effect, c.path) == ("masqueraded unexpectedly", ("prerouting", "forward", "postrouting"))

    # "Works after a Netbird restart": its table registered last, its chain runs first ...
    sh(node, "nft", "delete", "table", "ip", "netbird")
    sh(node, "nft", "-f", "-", input=netbird())
    assert named(conflicts_of(node), "kube-router", "netbird-acl-forward-filter", 0x20000)
    send(peer, HOSTPORT)
    assert (dropped_by_netbird(node), arrived(pod)) == (0, 3)
    assert masqueraded(pod) == 3   # ... and the pod sees the node, not the peer

    # ... "breaks after a sync": kube-router's restore re-registers ip filter.
    sh(node, "iptables-restore", input=KUBE_ROUTER)
    send(peer, HOSTPORT)
    assert (dropped_by_netbird(node), arrived(pod)) == (3, 3)


def test_kube_proxy_masquerade_bit_breaks_netbird_in_either_order(lab):
    node, peer, pod = lab
    sh(node, "nft", "-f", "-", input=netbird())
    sh(node, "iptables-restore", input=KUBE_PROXY)

    c = named(conflicts_of(node), "kube-proxy", "netbird-acl-forward-filter", 0x4000)
    assert (c.order, c.path, c.writer.rule.chain) == ("before", ("prerouting", "forward"),
                                                       "KUBE-MARK-MASQ")
    assert (c.writer.what, c.effect) == ("meta mark: set bits 0x4000", "accept missed")
    send(peer, SERVICE_PORT)
    assert (dropped_by_netbird(node), arrived(pod)) == (3, 0)

    # nat prerouting (-100) runs after mangle (-150) whatever the registration order
    sh(node, "nft", "delete", "table", "ip", "netbird")
    sh(node, "nft", "-f", "-", input=netbird())
    send(peer, SERVICE_PORT)
    assert (dropped_by_netbird(node), arrived(pod)) == (3, 0)


def test_disjoint_masked_bits_no_alarm_and_traffic_passes(lab):
    node, peer, pod = lab
    sh(node, "iptables-restore", "-n", input=PORTMAP)
    sh(node, "nft", "-f", "-", input=netbird(masked=True))
    sh(node, "iptables-restore", input=KUBE_ROUTER)   # the order that dropped above

    found = conflicts_of(node)
    assert found == (), "\n".join(conflict_text(c) for c in found)
    send(peer, HOSTPORT)
    assert (dropped_by_netbird(node), arrived(pod), masqueraded(pod)) == (0, 3, 0)


# --- a plain k3s node: no alarm ------------------------------------------------------

# k3s's kube-router puts its explicit accept into the built-in chains too, in its own
# words (k3s-io/kube-router pkg/controllers/netpol network_policy_controller.go,
# ensureExplicitAccept, as seen in `iptables-save` on k3s nodes).
K3S_EXPLICIT_ACCEPT = "\n".join(
    f'-A {chain} -m comment --comment "KUBE-ROUTER rule to explicitly ACCEPT traffic that '
    f'comply to network policies" -m mark --mark 0x20000/0x20000 -j ACCEPT'
    for chain in ("INPUT", "FORWARD", "OUTPUT"))
# flannel (flannel-io/flannel pkg/trafficmngr/iptables/iptables.go, MasqRules and
# ForwardRules, v0.25): it leaves what kube-proxy marked 0x4000 to kube-proxy's masquerade.
FLANNEL = """*nat
:POSTROUTING ACCEPT [0:0]
:FLANNEL-POSTRTG - [0:0]
-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.42.0.0/24 -d 10.42.0.0/16 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.42.0.0/16 -d 10.42.0.0/24 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG ! -s 10.42.0.0/16 -d 10.42.0.0/24 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.42.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
-A FLANNEL-POSTRTG ! -s 10.42.0.0/16 -d 10.42.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
COMMIT
*filter
:FORWARD ACCEPT [0:0]
:FLANNEL-FWD - [0:0]
-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
-A FLANNEL-FWD -s 10.42.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
-A FLANNEL-FWD -d 10.42.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
COMMIT
"""


def test_a_plain_k3s_node_raises_no_alarm(lab):
    """kube-router's network policy, kube-proxy (iptables mode), flannel and portmap, as
    they write their rules: every bit they share is their own or shared on purpose."""
    node, peer, pod = lab
    sh(node, "iptables-restore", "-n", input=PORTMAP)
    sh(node, "iptables-restore", "-n", input=KUBE_PROXY)
    sh(node, "iptables-restore", "-n", input=FLANNEL)
    sh(node, "iptables-restore", "-n", input=KUBE_ROUTER.replace(
        "COMMIT", K3S_EXPLICIT_ACCEPT + "\nCOMMIT"))

    found = conflicts_of(node)
    assert not [c for c in found if c.harm], "\n".join(conflict_text(c) for c in found)
    shared = [c for c in found if not c.harm]
    assert [(c.writer.owner, c.reader.owner, c.bits) for c in shared] == \
        [("kube-proxy", "flannel", 0x4000)] * len(shared) and shared
    assert all("intended" in c.why_shared for c in shared)
    out = sh(node, *fwgate_cmd(), "conflicts", check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "no packet-mark conflict harms a packet" in out.stdout, out.stdout
    everything = json.loads(sh(node, *fwgate_cmd(), "conflicts", "--all", "--json").stdout)
    assert everything["shared_count"] == len(shared) and everything["conflicts"]
    # ... and packets through the hostPort and the service arrive.
    send(peer, HOSTPORT)
    send(peer, SERVICE_PORT)
    assert arrived(pod) == 6


def test_an_unknown_owner_is_never_an_alarm_on_its_own(lab):
    node, peer, pod = lab
    sh(node, "nft", "-f", "-", input=netbird())
    # kube-proxy's masquerade bit, written after Netbird's mangle by a rule nothing names:
    # it can break Netbird's exact test, but who wrote it is unknown
    sh(node, "nft", "-f", "-", input="""table ip mystery {
  chain pre {
    type filter hook prerouting priority -100; policy accept;
    meta mark set meta mark | 0x4000
  }
}""")
    found = conflicts_of(node)
    assert found and not [c for c in found if c.harm], "\n".join(conflict_text(c) for c in found)
    assert sh(node, *fwgate_cmd(), "conflicts", check=False).returncode == 0
