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

from fwgate_testing.helpers import fwgate_cmd, in_netns, sh
from fwgate.marks import Conflict, conflict_text, find_conflicts
from fwgate_testing.marks_lab import (  # noqa: F401  (lab is a fixture)
    arrived, dropped_by_netbird, lab, masqueraded, send,
)
from fwgate_testing.rulesets import (
    FLANNEL, HOSTPORT, K3S_EXPLICIT_ACCEPT, KUBE_PROXY, KUBE_ROUTER, POD_FW, PORTMAP,
    SERVICE_PORT, netbird,
)

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
