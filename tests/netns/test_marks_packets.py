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

from fwgate_testing.helpers import delete_netns, fwgate_cmd, in_netns, new_netns, sh
from fwgate.marks import Conflict, conflict_text, find_conflicts
from fwgate_testing.rulesets import (
    HOSTPORT, KUBE_PROXY, KUBE_ROUTER, NODE_WT0, PEER_WT0, POD, POD_FW, PORTMAP, SERVICE_PORT, netbird,
)

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
