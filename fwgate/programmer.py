"""A Netbird-like rule programmer: Netbird's exact nf_tables encodings over netlink.

It plays a starting Netbird agent for the demo, the tests and the benchmarks:
tables and chains first, then ACL sets and rules, then the "allow wt0" rules in
iptables' `ip filter` table (inserted at the top, raw userdata tags, the
conntrack test as a native `ct` expression: the crash-prone form), in bursts
with pauses between them.

    python -m fwgate.programmer [--netns NS] [--pause 0.5] [--churn SECONDS]
"""
from __future__ import annotations

import argparse
import ipaddress
import signal
import struct
import sys
import time
from collections.abc import Callable

from . import exprs as X
from .adapters import nfnl
from .adapters.nfnl import (
    NLM_F_APPEND, NLM_F_CREATE, NfSocket, attr, attr_str, attr_u32, attr_u64, nested,
)

NF_INET_LOCAL_IN, NF_INET_FORWARD, NF_INET_LOCAL_OUT, NF_INET_POST_ROUTING = 1, 2, 3, 4
NFT_PAYLOAD_NETWORK_HEADER = 1
NFT_TYPE_IPV4_ADDR = 7
CT_ESTABLISHED_RELATED = struct.pack("=I", 0x6)  # ct state bits, host order as the kernel keeps them
IP = nfnl.FAMILIES["ip"]

# Netbird's tags, stored as raw NFTA_RULE_USERDATA bytes.
TAG_FORWARD_IIF = b"frwacceptiif"
TAG_FORWARD_OIF = b"frwacceptoif"
TAG_INPUT = b"inputaccept"

Msg = tuple[int, int, int, bytes]


def table_msg(family: int, name: str) -> Msg:
    return nfnl.NEWTABLE, family, NLM_F_CREATE, attr_str(nfnl.NFTA_TABLE_NAME, name)


def chain_msg(family: int, table: str, name: str, hook: int | None = None,
              priority: int = 0, kind: str = "filter") -> Msg:
    parts = [attr_str(nfnl.NFTA_CHAIN_TABLE, table), attr_str(nfnl.NFTA_CHAIN_NAME, name)]
    if hook is not None:
        parts += [nested(nfnl.NFTA_CHAIN_HOOK, attr_u32(nfnl.NFTA_HOOK_HOOKNUM, hook),
                         attr_u32(nfnl.NFTA_HOOK_PRIORITY, priority)),
                  attr_u32(nfnl.NFTA_CHAIN_POLICY, 1),  # accept
                  attr_str(nfnl.NFTA_CHAIN_TYPE, kind)]
    return nfnl.NEWCHAIN, family, NLM_F_CREATE, b"".join(parts)


def rule_msg(family: int, table: str, chain: str, expressions: list[bytes],
             userdata: bytes | None = None, append: bool = True,
             position: int | None = None) -> Msg:
    """A NEWRULE: appended, or (append=False) inserted at the top / before `position`."""
    parts = [attr_str(nfnl.NFTA_RULE_TABLE, table), attr_str(nfnl.NFTA_RULE_CHAIN, chain),
             nested(nfnl.NFTA_RULE_EXPRESSIONS, *expressions)]
    if position is not None:
        parts.append(attr_u64(nfnl.NFTA_RULE_POSITION, position))
    if userdata is not None:
        parts.append(attr(nfnl.NFTA_RULE_USERDATA, userdata))
    return nfnl.NEWRULE, family, NLM_F_CREATE | (NLM_F_APPEND if append else 0), b"".join(parts)


def del_rule_msg(family: int, table: str, chain: str, handle: int) -> Msg:
    return nfnl.DELRULE, family, 0, (attr_str(nfnl.NFTA_RULE_TABLE, table) +
                                     attr_str(nfnl.NFTA_RULE_CHAIN, chain) +
                                     attr_u64(nfnl.NFTA_RULE_HANDLE, handle))


def del_table_msg(family: int, name: str) -> Msg:
    return nfnl.DELTABLE, family, 0, attr_str(nfnl.NFTA_TABLE_NAME, name)


# --- Netbird's encodings -------------------------------------------------------

def forward_oif_rule(iface: str) -> list[bytes]:
    """`frwacceptoif`: oifname wt0 ct state established,related accept, Netbird's way."""
    return [X.meta_load(X.META_OIFNAME, 1),
            X.cmp(X.CMP_EQ, X.ifname_bytes(iface, padded=True), 1),
            X.ct_load(X.CT_STATE, 2),
            X.bitwise(2, 2, CT_ESTABLISHED_RELATED, b"\0\0\0\0"),
            X.cmp(X.CMP_NEQ, b"\0\0\0\0", 2),
            X.counter(),
            X.verdict(X.NF_ACCEPT)]


def iif_accept_rule(iface: str) -> list[bytes]:
    """`frwacceptiif` and `inputaccept`: iifname wt0 accept."""
    return [X.meta_load(X.META_IIFNAME, 1),
            X.cmp(X.CMP_EQ, X.ifname_bytes(iface, padded=True), 1),
            X.counter(),
            X.verdict(X.NF_ACCEPT)]


def iptables_filter_table() -> list[Msg]:
    """`ip filter` with the built-in chains as iptables-nft creates them."""
    return [table_msg(IP, "filter"),
            chain_msg(IP, "filter", "INPUT", NF_INET_LOCAL_IN),
            chain_msg(IP, "filter", "FORWARD", NF_INET_FORWARD),
            chain_msg(IP, "filter", "OUTPUT", NF_INET_LOCAL_OUT)]


class NetbirdProgrammer:
    """Writes a Netbird agent's rules in the order and shape Netbird does."""

    def __init__(self, sock: NfSocket, iface: str = "wt0", peers: int = 8):
        self.sock, self.iface, self.peers = sock, iface, peers
        self.last_change = 0.0  # time.monotonic() of our last committed change

    def commit(self, messages: list[Msg]) -> None:
        if messages:
            self.sock.batch(messages)
            self.last_change = time.monotonic()

    def burst_tables(self) -> None:
        self.commit([table_msg(IP, "netbird"),
                     chain_msg(IP, "netbird", "netbird-acl-input-filter", NF_INET_LOCAL_IN),
                     chain_msg(IP, "netbird", "netbird-acl-forward-filter", NF_INET_FORWARD),
                     chain_msg(IP, "netbird", "netbird-rt-nat", NF_INET_POST_ROUTING, 100, "nat"),
                     chain_msg(IP, "netbird", "netbird-acl-input-rules"),
                     chain_msg(IP, "netbird", "netbird-rt-fwd")])

    def burst_acl(self) -> None:
        set_name = "nb0000001"
        elements = [nested(nfnl.NFTA_LIST_ELEM, nested(1, attr(nfnl.NFTA_DATA_VALUE, (
            ipaddress.IPv4Address("100.64.0.10") + i).packed))) for i in range(self.peers)]
        iface = X.ifname_bytes(self.iface, padded=True)
        self.commit([
            (nfnl.NEWSET, IP, NLM_F_CREATE,
             attr_str(1, "netbird") + attr_str(2, set_name) + attr_u32(3, 0) +
             attr_u32(4, NFT_TYPE_IPV4_ADDR) + attr_u32(5, 4) + attr_u32(10, 1)),
            (nfnl.NEWSETELEM, IP, NLM_F_CREATE,
             attr_str(1, "netbird") + attr_str(2, set_name) + nested(3, *elements)),
            rule_msg(IP, "netbird", "netbird-acl-input-rules", [
                X.meta_load(X.META_IIFNAME), X.cmp(X.CMP_EQ, iface),
                X.payload_load(NFT_PAYLOAD_NETWORK_HEADER, 12, 4), X.lookup(set_name),
                X.counter(), X.verdict(X.NF_ACCEPT)]),
            rule_msg(IP, "netbird", "netbird-acl-input-filter", [
                X.meta_load(X.META_IIFNAME), X.cmp(X.CMP_EQ, iface),
                X.verdict(-3, "netbird-acl-input-rules")]),
        ])

    def missing_filter_messages(self) -> list[Msg]:
        """Netbird's "add the rule if its tag is missing" step for `ip filter`."""
        from .adapters.nft import snapshot  # local: the programmer is also a plain script
        from .config import TableRef
        snap = snapshot(self.sock, [TableRef("ip", "filter")])
        table = snap.table(TableRef("ip", "filter"))
        messages = [] if table and {"INPUT", "FORWARD"} <= {c.name for c in table.chains} \
            else iptables_filter_table()
        tags = {r.userdata for r in table.rules} if table else set()
        wanted = [("FORWARD", TAG_FORWARD_IIF, iif_accept_rule(self.iface)),
                  ("FORWARD", TAG_FORWARD_OIF, forward_oif_rule(self.iface)),
                  ("INPUT", TAG_INPUT, iif_accept_rule(self.iface))]
        for chain, tag, expressions in wanted:
            if tag not in tags:  # inserted at the top of the chain: no NLM_F_APPEND
                messages.append(rule_msg(IP, "filter", chain, expressions, tag, append=False))
        return messages

    def burst_filter(self) -> None:
        self.commit(self.missing_filter_messages())

    def burst_routing(self) -> None:
        iface = X.ifname_bytes(self.iface, padded=True)
        self.commit([
            rule_msg(IP, "netbird", "netbird-rt-fwd", [
                X.meta_load(X.META_OIFNAME), X.cmp(X.CMP_EQ, iface), X.counter(),
                X.verdict(X.NF_ACCEPT)]),
            rule_msg(IP, "netbird", "netbird-acl-forward-filter", [
                X.meta_load(X.META_IIFNAME), X.cmp(X.CMP_EQ, iface),
                X.verdict(-3, "netbird-rt-fwd")]),
        ])

    BURSTS = ("burst_tables", "burst_acl", "burst_filter", "burst_routing")

    def run(self, pause: float, on_burst: Callable[[str], None] | None = None,
            sleep: Callable[[float], None] = time.sleep) -> float:
        """All bursts with `pause` seconds between them; returns the last change time."""
        for i, name in enumerate(self.BURSTS):
            if i:
                sleep(pause)
            getattr(self, name)()
            if on_burst:
                on_burst(name)
        return self.last_change

    def churn_once(self, table: str = "netbird", chain: str = "netbird-rt-fwd") -> None:
        """One more change: append a rule (the shape of a peer being added)."""
        if table != "netbird":
            self.commit([table_msg(IP, table), chain_msg(IP, table, chain)])
        self.commit([rule_msg(IP, table, chain, [X.counter(), X.verdict(-1)])])

    def flood(self, count: int, table: str = "netbird", set_name: str = "nb0000001") -> None:
        """`count` small transactions as fast as netlink takes them: a peer's address
        added to and removed from an ACL set, over and over (an event flood that
        costs the kernel little, unlike a chain growing by one rule per commit)."""
        element = attr_str(1, table) + attr_str(2, set_name) + nested(3, nested(
            nfnl.NFTA_LIST_ELEM, nested(1, attr(nfnl.NFTA_DATA_VALUE,
                                                ipaddress.IPv4Address("100.64.255.254").packed))))
        for i in range(count):
            self.sock.batch([(nfnl.DELSETELEM if i % 2 else nfnl.NEWSETELEM, IP,
                              0 if i % 2 else NLM_F_CREATE, element)])
        self.last_change = time.monotonic()

    def flush(self) -> None:
        """What a stopping Netbird does: drop its table and its rules in `ip filter`."""
        from .adapters.nft import snapshot
        from .config import TableRef
        snap = snapshot(self.sock, [TableRef("ip", "filter"), TableRef("ip", "netbird")])
        messages = [del_table_msg(IP, "netbird")] if snap.table(TableRef("ip", "netbird")) else []
        ours = {TAG_FORWARD_IIF, TAG_FORWARD_OIF, TAG_INPUT}
        table = snap.table(TableRef("ip", "filter"))
        for rule in table.rules if table else ():
            if rule.userdata in ours:
                messages.append(del_rule_msg(IP, "filter", rule.chain, rule.handle))
        self.commit(messages)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fwgate.programmer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--netns", help="work inside /run/netns/NAME")
    parser.add_argument("--iface", default="wt0")
    parser.add_argument("--pause", type=float, default=0.5, help="seconds between bursts")
    parser.add_argument("--churn", type=float, metavar="SECONDS",
                        help="after the bursts, change a rule every SECONDS until stopped")
    parser.add_argument("--churn-table", default="netbird", help="table --churn changes")
    parser.add_argument("--flush", action="store_true", help="remove what Netbird wrote, then exit")
    parser.add_argument("--skip-bursts", action="store_true", help="with --churn: only churn")
    parser.add_argument("--flood", type=int, metavar="N",
                        help="after the bursts, N one-rule transactions as fast as possible")
    args = parser.parse_args(argv)
    if args.netns:
        from .adapters.netns import enter
        enter(args.netns)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with NfSocket() as sock:
        prog = NetbirdProgrammer(sock, args.iface)
        if args.flush:
            prog.flush()
            return 0
        if not args.skip_bursts:
            prog.run(args.pause, on_burst=lambda n: print(
                f"{time.monotonic():.6f} {n}", flush=True))
        if args.flood:
            prog.flood(args.flood)
            print(f"{prog.last_change:.6f} flood", flush=True)
        while args.churn:
            time.sleep(args.churn)
            prog.churn_once(args.churn_table)
            print(f"{time.monotonic():.6f} churn", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
