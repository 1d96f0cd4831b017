"""Mark conflicts on a k3s-sized ruleset built by the real iptables (how long that takes
is bench/marks_speed.py's business): every kube-router pod firewall writes the same
bits, and the conflicts come out named once per kind, with how many rules they stand for."""
from __future__ import annotations

from fwgate.marks import find_conflicts
from fwgate_testing.helpers import in_netns, sh
from fwgate_testing.rulesets import MARKS_NETBIRD, kube_proxy_nat, kube_router_filter


def test_conflicts_at_scale_are_named_once_per_kind(netns):
    from fwgate.adapters.nfsock import NfSocket
    from fwgate.adapters.nft import snapshot
    sh(netns, "iptables-restore", input=kube_router_filter(200))
    sh(netns, "iptables-restore", "-n", input=kube_proxy_nat(100))
    sh(netns, "nft", "-f", "-", input=MARKS_NETBIRD)

    def take():
        with NfSocket() as sock:
            return snapshot(sock, families=("ip", "ip6", "inet"))
    snap = in_netns(netns, take)
    found = find_conflicts(snap)
    assert sum(len(t.rules) for t in snap.tables.values()) > 2000
    pairs = {(c.writer.owner, c.reader.owner) for c in found}
    assert {("kube-router", "netbird"), ("kube-proxy", "netbird")} <= pairs
    # one per kind, however many pods: the rest are `similar`
    kube_router = [c for c in found if c.writer.owner == "kube-router"]
    assert len(kube_router) < 10 and max(c.writer.similar for c in kube_router) >= 199
