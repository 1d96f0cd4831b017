"""Marks outside nf_tables, read from the real kernel, and kubernetes#113659 with packets.

    node ── eth1 / eth1p ── peer (192.168.77.2)

The node holds wg-quick's routing rules (WireGuard/wireguard-tools src/wg-quick/linux.bash
add_default, v1.0.20210914: `ip rule add not fwmark $table table $table`, `ip rule add
table main suppress_prefixlength 0`, table = fwmark = 51820) and a UDP socket with
SO_MARK 51820 (0xca6c): the mark WireGuard puts on every packet it sends (this kernel has
no WireGuard; a socket mark is the same skb->mark to netfilter). kubelet's KUBE-FIREWALL
drops what carries 0x8000. The peer counts what arrives.
"""
from __future__ import annotations

import errno
import json
import socket
import struct

import pytest

from fwgate_testing.helpers import (
    delete_netns, fwgate_cmd, in_netns, new_netns, sh, write_config,
)
from fwgate_testing.rulesets import KUBELET

NODE, PEER, PORT = "192.168.77.1", "192.168.77.2", 51820
WG_FWMARK = 51820   # 0xca6c



def wg_quick_rules(node: str) -> None:
    """wg-quick's routing for a default route through wg0 (a veth stands in for it)."""
    sh(node, "ip", "link", "add", "wg0", "type", "veth", "peer", "name", "wg0p")
    sh(node, "ip", "link", "set", "wg0", "up")
    sh(node, "ip", "route", "add", "0.0.0.0/0", "dev", "wg0", "table", str(WG_FWMARK))
    sh(node, "ip", "-4", "rule", "add", "not", "fwmark", str(WG_FWMARK), "table", str(WG_FWMARK))
    sh(node, "ip", "-4", "rule", "add", "table", "main", "suppress_prefixlength", "0")


@pytest.fixture
def pair(netns):
    node, peer = netns, new_netns("fwt-peer")
    try:
        sh(node, "ip", "link", "add", "eth1", "type", "veth", "peer", "name", "eth1p", "netns", peer)
        sh(node, "ip", "addr", "add", f"{NODE}/24", "dev", "eth1")
        sh(peer, "ip", "addr", "add", f"{PEER}/24", "dev", "eth1p")
        for ns, link in ((node, "lo"), (node, "eth1"), (peer, "lo"), (peer, "eth1p")):
            sh(ns, "ip", "link", "set", link, "up")
        sh(peer, "nft", "-f", "-", input=f"""table ip probe {{
  chain in {{
    type filter hook input priority 0; policy accept;
    udp dport {PORT} counter
  }}
}}""")
        yield node, peer
    finally:
        delete_netns(peer)


def arrived(peer: str) -> int:
    listing = json.loads(sh(peer, "nft", "-j", "list", "chain", "ip", "probe", "in").stdout)
    return next(e["counter"]["packets"] for item in listing["nftables"]
                for e in item.get("rule", {}).get("expr", []) if "counter" in e)


def marked_socket(node: str, mark: int) -> socket.socket:
    """A UDP socket in the node's namespace with SO_MARK (it stays there when the thread
    that made it leaves)."""
    def make():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
        s.bind((NODE, PORT))
        return s
    return in_netns(node, make)


def send(sock: socket.socket, count: int = 3) -> int:
    """Datagrams to the peer; how many the node's own firewall refused (EPERM)."""
    refused = 0
    for _ in range(count):
        try:
            sock.sendto(b"handshake", (PEER, PORT))
        except PermissionError:
            refused += 1
    return refused


def conflicts(node: str) -> tuple[int, dict]:
    out = sh(node, *fwgate_cmd(), "conflicts", "--json", check=False)
    assert out.returncode in (0, 1), out.stderr
    return out.returncode, json.loads(out.stdout)


def test_sockets_and_routing_rules_are_read_from_the_kernel(pair):
    from fwgate.adapters.sockmarks import read_outside
    from fwgate.marks.routing import socket_owner
    node, _ = pair
    wg_quick_rules(node)
    # Netbird's routing rules (systemops_linux.go getSetupRules) and one of its sockets
    for family in ("-4", "-6"):
        sh(node, "ip", family, "rule", "add", "not", "fwmark", "0x1bd00", "table", "7120",
           "priority", "110")
    udp = marked_socket(node, WG_FWMARK)

    def tcp6():
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, 0x1BD00)
        s.bind(("::1", 0))
        s.listen()
        return s
    tcp = in_netns(node, tcp6)
    try:
        outside = in_netns(node, read_outside)
    finally:
        udp.close()
        tcp.close()
    assert sorted((r.family, r.priority, r.mark, r.invert, r.table) for r in outside.rules) == [
        ("ip", 110, 0x1BD00, True, 7120), ("ip", 32765, WG_FWMARK, True, WG_FWMARK),
        ("ip6", 110, 0x1BD00, True, 7120)]
    got = {(s.mark, s.family, s.source.split(" ")[0], socket_owner(s, outside.rules))
           for s in outside.sockets}
    assert got == {(WG_FWMARK, "ip", "udp", "wg-quick"), (0x1BD00, "ip6", "tcp", "netbird")}


def test_kubernetes_113659_a_wireguard_fwmark_dropped_by_kube_firewall(pair, tmp_path):
    node, peer = pair
    wg_quick_rules(node)
    sock = marked_socket(node, WG_FWMARK)
    try:
        # without kubelet's firewall the marked packets leave and arrive
        assert send(sock) == 0
        assert arrived(peer) == 3
        code, doc = conflicts(node)
        assert (code, doc["conflicts"]) == (0, [])

        sh(node, "iptables-restore", input=KUBELET)
        code, doc = conflicts(node)
        assert code == 1
        (c,) = doc["conflicts"]
        assert (c["bits"], c["effect"], c["path"], c["severity"]) == \
            ("0x8000", "dropped", ["output"], "harm")
        assert (c["writer"]["owner"], c["writer"]["kind"], c["writer"]["does"]) == \
            ("wg-quick", "socket mark", "meta mark set 0xca6c")
        assert c["writer"]["source"] == f"udp socket {NODE}:{PORT} (SO_MARK)"
        assert (c["reader"]["owner"], c["reader"]["chain"], c["reader"]["does"]) == \
            ("kubelet", "KUBE-FIREWALL", "meta mark & 0x8000 == 0x8000 → drop")
        # ... and every handshake is dropped on its way out
        assert send(sock) == 3
        assert arrived(peer) == 3
        text = sh(node, *fwgate_cmd(), "conflicts", check=False).stdout
        assert text.startswith("meta mark 0x8000: wg-quick udp socket"), text
        # check (and the guard: the same probe) sees it too, without making it an exit code
        config = write_config(str(tmp_path), "stages:\n  - name: t\n    rules:\n"
                                             "      - table: ip filter\n")
        out = sh(node, *fwgate_cmd(), "--config", config, "check", "--json", check=False)
        assert out.returncode == 0, out.stderr
        (m,) = json.loads(out.stdout)["marks"]
        assert (m["writer"]["owner"], m["writer"]["kind"], m["reader"]["owner"], m["bits"]) == \
            ("wg-quick", "socket mark", "kubelet", "0x8000")

        # kubelet with another drop bit (--iptables-drop-bit 16): no harm, packets arrive
        sh(node, "iptables-restore", input=KUBELET.replace("0x8000", "0x10000"))
        code, doc = conflicts(node)
        assert (code, doc["conflicts"]) == (0, [])
        assert send(sock) == 0
        assert arrived(peer) == 6
    finally:
        sock.close()


def test_a_generic_netlink_family_is_found_by_its_one_answer(netns):
    """The controller answers CTRL_CMD_GETFAMILY with one message, neither a dump's
    NLM_F_MULTI nor a DONE after it: that message is the whole answer (read as a dump, the
    WireGuard family of a node that has one would never be found: the read waits)."""
    from fwgate.adapters.sockmarks import genl_family
    from fwgate.netlink.route import GENL_ID_CTRL
    assert in_netns(netns, genl_family, "nlctrl") == GENL_ID_CTRL
    assert in_netns(netns, genl_family, "fwgate-none") is None


def _wireguard_family(node: str) -> int | None:
    from fwgate.adapters.sockmarks import wireguard_family
    return in_netns(node, wireguard_family)


def _set_fwmark(ifname: str, family: int, mark: int) -> None:
    """`wg set IFNAME fwmark MARK`, without the wg binary."""
    from fwgate.netlink.route import NETLINK_GENERIC, wg_set_fwmark_request
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC) as s:
        s.bind((0, 0))
        s.send(wg_set_fwmark_request(family, ifname, mark, seq=1))
        answer = s.recv(65536)
        code = -struct.unpack_from("=i", answer, 16)[0]
        if code:
            raise OSError(code, errno.errorcode.get(code, str(code)))


def test_a_wireguard_links_fwmark_is_read_over_generic_netlink(pair):
    node, peer = pair
    family = _wireguard_family(node)
    if family is None:
        pytest.skip("this kernel has no WireGuard (CONFIG_WIREGUARD): no generic netlink "
                    "family 'wireguard' to read a fwmark from")
    from fwgate.adapters.sockmarks import read_outside
    sh(node, "ip", "link", "add", "wgt0", "type", "wireguard")
    in_netns(node, _set_fwmark, "wgt0", family, WG_FWMARK)
    outside = in_netns(node, read_outside)
    assert [(s.mark, s.family, s.source.split(" (")[0]) for s in outside.sockets] == \
        [(WG_FWMARK, "inet", "WireGuard link wgt0")]
    wg_quick_rules(node)
    sh(node, "iptables-restore", input=KUBELET)
    code, doc = conflicts(node)
    assert code == 1 and doc["conflicts"][0]["writer"]["owner"] == "wg-quick"
