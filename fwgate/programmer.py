"""A Netbird-like rule programmer: Netbird's exact nf_tables encodings over netlink.

It plays a Netbird agent that found no iptables on its PATH, for the demo, the
tests and the benchmarks (with --iptables-from-path, one that looks, as Netbird
does: an `iptables` on its PATH writes its filter-table rules, in iptables' own
encoding, and deletes them by content): tables and chains first, then ACL sets and rules, then
the "allow wt0" rules in iptables' `filter` tables (inserted at the top, raw
userdata tags, the conntrack test as a native `ct` expression: the crash-prone
form), in bursts with pauses between them. Like Netbird it writes into `ip
filter` (and, with the IPv6 overlay, `ip6 filter`) only if that table exists;
a firewall re-init first deletes its tagged rules, then writes them again.

    python -m fwgate.programmer [--netns NS] [--pause 0.5] [--with-filter-table]
        [--ip6] [--churn SECONDS] [--reinit N --every SECONDS] [--flush]
        [--iptables-from-path]
"""
from __future__ import annotations

import argparse
import ipaddress
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable

from .adapters.nfsock import NfSocket
from .model import TableRef
from .netbird import TAG_FORWARD_IIF, TAG_FORWARD_OIF, TAG_INPUT
from .netlink import consts as C
from .netlink import exprs as X
from .netlink.attrs import attr, attr_str, attr_u32, nested
from .netlink.messages import Msg
from .netlink.nftables import chain_msg, del_rule_msg, del_table_msg, rule_msg, table_msg

CT_ESTABLISHED_RELATED = struct.pack("=I", C.CT_STATE_ESTABLISHED | C.CT_STATE_RELATED)  # host order
IP = C.FAMILIES["ip"]



# --- Netbird's encodings -------------------------------------------------------

def forward_oif_rule(iface: str) -> list[bytes]:
    """`frwacceptoif`: oifname wt0 ct state established,related accept, Netbird's way."""
    return [X.meta_load(C.META_OIFNAME, 1),
            X.cmp(C.CMP_EQ, X.ifname_bytes(iface, padded=True), 1),
            X.ct_load(C.CT_STATE, 2),
            X.bitwise(2, 2, CT_ESTABLISHED_RELATED, b"\0\0\0\0"),
            X.cmp(C.CMP_NEQ, b"\0\0\0\0", 2),
            X.counter(),
            X.verdict(C.NF_ACCEPT)]


def iif_accept_rule(iface: str) -> list[bytes]:
    """`frwacceptiif` and `inputaccept`: iifname wt0 accept."""
    return [X.meta_load(C.META_IIFNAME, 1),
            X.cmp(C.CMP_EQ, X.ifname_bytes(iface, padded=True), 1),
            X.counter(),
            X.verdict(C.NF_ACCEPT)]


def iptables_filter_table(family: int = IP) -> list[Msg]:
    """`ip filter` (or `ip6 filter`) with the built-in chains as iptables-nft creates them."""
    return [table_msg(family, "filter"),
            chain_msg(family, "filter", "INPUT", C.NF_INET_LOCAL_IN),
            chain_msg(family, "filter", "FORWARD", C.NF_INET_FORWARD),
            chain_msg(family, "filter", "OUTPUT", C.NF_INET_LOCAL_OUT)]


FILTER_RULES = (("FORWARD", TAG_FORWARD_IIF, iif_accept_rule),
                ("FORWARD", TAG_FORWARD_OIF, forward_oif_rule),
                ("INPUT", TAG_INPUT, iif_accept_rule))
# The same rules as Netbird writes them through an iptables binary (DESIGN 1b:
# client/firewall/nftables, v0.30.2-v0.77): the conntrack test as `-m conntrack`,
# which every iptables-nft reads.
IPTABLES_RULES = (("FORWARD", "-i {iface} -j ACCEPT"),
                  ("FORWARD", "-o {iface} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"),
                  ("INPUT", "-i {iface} -j ACCEPT"))


class NetbirdProgrammer:
    """Writes a Netbird agent's rules in the order and shape Netbird does."""

    def __init__(self, sock: NfSocket, iface: str = "wt0", peers: int = 8,
                 families: tuple[str, ...] = ("ip",), create_filter: bool = False,
                 iptables_from_path: bool = False):
        self.sock, self.iface, self.peers = sock, iface, peers
        self.iptables_from_path = iptables_from_path  # Netbird's lookup of `iptables`
        self.families = families          # "ip6" too: Netbird 0.71+ with the IPv6 overlay
        self.create_filter = create_filter  # a node where something made iptables' table
        self.last_change = 0.0  # time.monotonic() of our last committed change

    def commit(self, messages: list[Msg]) -> None:
        if messages:
            self.sock.batch(messages)
            self.last_change = time.monotonic()

    def burst_tables(self) -> None:
        self.commit([table_msg(IP, "netbird"),
                     chain_msg(IP, "netbird", "netbird-acl-input-filter", C.NF_INET_LOCAL_IN),
                     chain_msg(IP, "netbird", "netbird-acl-forward-filter", C.NF_INET_FORWARD),
                     chain_msg(IP, "netbird", "netbird-rt-nat", C.NF_INET_POST_ROUTING, 100, "nat"),
                     chain_msg(IP, "netbird", "netbird-acl-input-rules"),
                     chain_msg(IP, "netbird", "netbird-rt-fwd")])

    def burst_acl(self) -> None:
        set_name = "nb0000001"
        elements = [nested(C.NFTA_LIST_ELEM, nested(1, attr(C.NFTA_DATA_VALUE, (
            ipaddress.IPv4Address("100.64.0.10") + i).packed))) for i in range(self.peers)]
        iface = X.ifname_bytes(self.iface, padded=True)
        self.commit([
            (C.NEWSET, IP, C.NLM_F_CREATE,
             attr_str(1, "netbird") + attr_str(2, set_name) + attr_u32(3, 0) +
             attr_u32(4, C.NFT_TYPE_IPV4_ADDR) + attr_u32(5, 4) + attr_u32(10, 1)),
            (C.NEWSETELEM, IP, C.NLM_F_CREATE,
             attr_str(1, "netbird") + attr_str(2, set_name) + nested(3, *elements)),
            rule_msg(IP, "netbird", "netbird-acl-input-rules", [
                X.meta_load(C.META_IIFNAME), X.cmp(C.CMP_EQ, iface),
                X.payload_load(C.PAYLOAD_NETWORK, 12, 4), X.lookup(set_name),
                X.counter(), X.verdict(C.NF_ACCEPT)]),
            rule_msg(IP, "netbird", "netbird-acl-input-filter", [
                X.meta_load(C.META_IIFNAME), X.cmp(C.CMP_EQ, iface),
                X.verdict(-3, "netbird-acl-input-rules")]),
        ])

    def missing_filter_messages(self, families: tuple[str, ...] | None = None) -> list[Msg]:
        """Netbird's "add the rule if its tag is missing" step for iptables' filter
        tables: only into a table that exists (unless create_filter)."""
        from .adapters.nft import snapshot  # local: the programmer is also a plain script
        refs = [TableRef(f, "filter") for f in families or self.families]
        snap = snapshot(self.sock, refs)
        messages: list[Msg] = []
        for ref in refs:
            family, table = C.FAMILIES[ref.family], snap.table(ref)
            if table is None or not {"INPUT", "FORWARD"} <= {c.name for c in table.chains}:
                if not self.create_filter:
                    continue  # Netbird: "'filter' table not found"
                messages += iptables_filter_table(family)
            tags = {bytes(r.userdata) for r in table.rules if r.userdata} if table else set()
            for chain, tag, expressions in FILTER_RULES:
                if tag not in tags:  # inserted at the top of the chain: no NLM_F_APPEND
                    messages.append(rule_msg(family, "filter", chain, expressions(self.iface), tag,
                                             append=False))
        return messages

    def _binary(self, family: str) -> str | None:
        """The iptables Netbird would find on its PATH for this family, if it looks: one
        in nf_tables mode (with a legacy one its rules would land where nothing that
        reads nf_tables sees them; Netbird 0.71+ then falls back to native rules)."""
        found = shutil.which("iptables" if family == "ip" else "ip6tables") \
            if self.iptables_from_path else None
        if found is None:
            return None
        from .adapters.iptables import mode_of  # local: the programmer is also a plain script
        return found if mode_of(found) == "nf_tables" else None

    def _through_iptables(self, binary: str, verb: str) -> bool:
        """Each rule with -C first, then `verb` (-I: insert at the top, -D: delete by
        content) where -C says so; False when the binary fails otherwise."""
        changed = False
        for chain, spec in IPTABLES_RULES:
            args = spec.format(iface=self.iface).split()
            present = subprocess.run([binary, "-w", "-t", "filter", "-C", chain, *args],
                                     capture_output=True).returncode == 0
            if present == (verb == "-D"):
                done = subprocess.run([binary, "-w", "-t", "filter", verb, chain, *args],
                                      capture_output=True)
                if done.returncode:
                    return False
                changed = True
        if changed:
            self.last_change = time.monotonic()
        return True

    def burst_filter(self) -> None:
        # One transaction per family: each family's rule is a change (and an exposure) of its own.
        for family in self.families:
            binary = self._binary(family)
            if binary and self._filter_exists(family) and self._through_iptables(binary, "-I"):
                continue  # written through iptables: nothing native
            self.commit(self.missing_filter_messages((family,)))

    def _filter_exists(self, family: str) -> bool:
        from .adapters.nft import snapshot
        table = snapshot(self.sock, [TableRef(family, "filter")]).table(TableRef(family, "filter"))
        return table is not None and {"INPUT", "FORWARD"} <= {c.name for c in table.chains}

    def burst_routing(self) -> None:
        iface = X.ifname_bytes(self.iface, padded=True)
        self.commit([
            rule_msg(IP, "netbird", "netbird-rt-fwd", [
                X.meta_load(C.META_OIFNAME), X.cmp(C.CMP_EQ, iface), X.counter(),
                X.verdict(C.NF_ACCEPT)]),
            rule_msg(IP, "netbird", "netbird-acl-forward-filter", [
                X.meta_load(C.META_IIFNAME), X.cmp(C.CMP_EQ, iface),
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
            C.NFTA_LIST_ELEM, nested(1, attr(C.NFTA_DATA_VALUE,
                                                ipaddress.IPv4Address("100.64.255.254").packed))))
        for i in range(count):
            self.sock.batch([(C.DELSETELEM if i % 2 else C.NEWSETELEM, IP,
                              0 if i % 2 else C.NLM_F_CREATE, element)])
        self.last_change = time.monotonic()

    def flush(self) -> None:
        """What a stopping Netbird does: drop its table and its tagged rules in the
        filter tables (found by tag: a copy kube-router re-wrote untagged stays)."""
        from .adapters.nft import snapshot
        filters = [TableRef(f, "filter") for f in self.families]
        snap = snapshot(self.sock, [*filters, TableRef("ip", "netbird")])
        messages = [del_table_msg(IP, "netbird")] if snap.table(TableRef("ip", "netbird")) else []
        ours = {tag for _, tag, _ in FILTER_RULES}
        for ref in filters:
            binary = self._binary(ref.family)
            if binary and snap.table(ref):
                self._through_iptables(binary, "-D")
            table = snap.table(ref)
            for rule in table.rules if table else ():
                if rule.userdata is not None and bytes(rule.userdata) in ours:
                    messages.append(del_rule_msg(C.FAMILIES[ref.family], "filter", rule.chain,
                                                 rule.handle))
        self.commit(messages)

    def reinit(self, pause: float = 0.0) -> float:
        """A firewall re-init (restart, `netbird up`, a route change ...): close, then
        init. Returns the time of the last change."""
        self.flush()
        return self.run(pause)


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
    parser.add_argument("--with-filter-table", action="store_true",
                        help="create iptables' filter table(s) if missing, as on a node where "
                             "iptables is in use at boot (Netbird itself never does)")
    parser.add_argument("--ip6", action="store_true", help="also ip6 filter (IPv6 overlay)")
    parser.add_argument("--iptables-from-path", action="store_true",
                        help="as Netbird: write the filter-table rules through the iptables "
                             "on PATH when there is one (natively only without one)")
    parser.add_argument("--reinit", type=int, default=0, metavar="N",
                        help="after the bursts, N firewall re-inits, --every SECONDS apart")
    parser.add_argument("--every", type=float, default=2.0, metavar="SECONDS")
    parser.add_argument("--serve", action="store_true",
                        help="after the bursts, run like an agent: SIGHUP is a firewall re-init "
                             "(close, then init with --pause between bursts), SIGTERM stops")
    args = parser.parse_args(argv)
    if args.netns:
        from .adapters.netns import enter
        enter(args.netns)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with NfSocket() as sock:
        prog = NetbirdProgrammer(sock, args.iface, families=("ip", "ip6") if args.ip6 else ("ip",),
                                 create_filter=args.with_filter_table,
                                 iptables_from_path=args.iptables_from_path)
        if args.flush:
            prog.flush()
            return 0
        if not args.skip_bursts:
            prog.run(args.pause, on_burst=lambda n: print(
                f"{time.monotonic():.6f} {n}", flush=True))
        if args.flood:
            prog.flood(args.flood)
            print(f"{prog.last_change:.6f} flood", flush=True)
        for _ in range(args.reinit):
            time.sleep(args.every)
            prog.reinit()
            print(f"{prog.last_change:.6f} reinit", flush=True)
        while args.churn:
            time.sleep(args.churn)
            prog.churn_once(args.churn_table)
            print(f"{time.monotonic():.6f} churn", flush=True)
        if args.serve:
            _serve(prog, args.pause)
    return 0


def _serve(prog: NetbirdProgrammer, pause: float) -> None:
    """Idle like the agent; each SIGHUP is one firewall re-init, SIGTERM the end."""
    wanted = {signal.SIGHUP, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, wanted)  # taken by sigwait, never lost
    while signal.sigwait(wanted) == signal.SIGHUP:
        prog.flush()
        print(f"{prog.last_change:.6f} reinit_close", flush=True)
        prog.run(pause, on_burst=lambda n: print(f"{time.monotonic():.6f} {n}", flush=True))


if __name__ == "__main__":
    sys.exit(main())
