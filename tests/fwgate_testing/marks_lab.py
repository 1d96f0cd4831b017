"""The mark-conflict lab: a node with Netbird's wt0 towards a peer and cni0 towards a
pod, each its own namespace, and the counters that say where datagrams went.

    peer ── wt0p/wt0 ── node ── cni0/eth0 ── pod (10.42.0.5)
"""
from __future__ import annotations

import json
import socket
import time

import pytest

from .helpers import delete_netns, in_netns, new_netns, sh
from .rulesets import NODE_WT0, PEER_WT0, POD


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
