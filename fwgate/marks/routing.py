"""Marks outside nf_tables: routing policy rules that test them, sockets that set them. Pure.

An `ip rule … fwmark X/M lookup T` is a reader: the routing decision after prerouting
(received and forwarded packets) and the re-route after a `type route` output chain
(locally sent ones; iptables' mangle OUTPUT is one) take table T when (mark & M) == X
(or != with `not`). A socket mark is a writer: every packet a socket with SO_MARK, or a
WireGuard link with a fwmark, sends leaves with that whole mark before the output hook.

Who wrote them is read from one table of signs, and from the rules themselves: a daemon
exempts its own packets from its routing table with `not fwmark <its socket mark>`
(wg-quick, Netbird), so such a rule names the owner of the sockets that carry that mark.
"""
from __future__ import annotations

from typing import NamedTuple

from .model import ALL, META, Read, Write
from .owners import UNKNOWN

_FAMILIES = {2: "ip", 10: "ip6"}


class RouteRule(NamedTuple):
    """A routing policy rule that tests the packet mark."""

    family: str          # "ip" or "ip6"
    priority: int
    mark: int
    mask: int
    invert: bool         # `not`: the rule applies when the mark test fails
    table: int
    action: str          # "lookup", "blackhole", "unreachable", "prohibit", "goto", "nop"
    iif: str | None = None
    oif: str | None = None
    others: tuple[str, ...] = ()   # other selectors ("from", "to", ...): fewer packets
    # `lookup local` comes first (priority 0 unless moved): a packet for a local address
    # is routed there and never reaches this rule, so received ones it sees are forwarded
    after_local: bool = False

    @property
    def read(self) -> Read:
        return Read(META, self.mask, self.mark & self.mask, self.invert)

    @property
    def verdict(self) -> str:
        """What it does, in the words a conflict's effect uses."""
        return f"lookup {self.table}" if self.action == "lookup" else self.action

    def describe(self) -> str:
        mark = f"{self.mark:#x}" + (f"/{self.mask:#x}" if self.mask != ALL else "")
        where = "".join(f" {k} {v}" for k, v in (("iif", self.iif), ("oif", self.oif)) if v)
        more = "".join(f" {o} …" for o in self.others)
        return (f"{self.family} rule {self.priority}: {'not ' if self.invert else ''}"
                f"fwmark {mark}{where}{more} {self.verdict}")


class SocketMark(NamedTuple):
    """Packets some local sender marks: a socket's SO_MARK or a WireGuard link's fwmark."""

    mark: int
    family: str          # "ip", "ip6" or "inet" (a WireGuard link sends both)
    source: str          # "WireGuard link wg0 (fwmark)", "udp socket 0.0.0.0:51820 (SO_MARK)"
    similar: int = 0     # more sockets like it

    @property
    def write(self) -> Write:
        return Write(META, force0=~self.mark & ALL, force1=self.mark)


class Outside(NamedTuple):
    """What the node holds outside nf_tables that writes or tests a mark."""

    rules: tuple[RouteRule, ...] = ()
    sockets: tuple[SocketMark, ...] = ()


# --- from the decoded netlink answers ------------------------------------------------------

RT_TABLE_LOCAL = 255   # linux/rtnetlink.h


def route_rules(fib_rules) -> tuple[RouteRule, ...]:
    """The rules that test a mark, from netlink.route.FibRule answers."""
    fib_rules = list(fib_rules)
    local: dict[int, int] = {}   # family → priority of the first plain `lookup local`
    for r in fib_rules:
        if r.table == RT_TABLE_LOCAL and r.action == "lookup" and not (
                r.invert or r.fwmask or r.iifname or r.oifname or r.others):
            local[r.family] = min(r.priority, local.get(r.family, r.priority))
    out = []
    for r in fib_rules:
        if not r.fwmask or r.family not in _FAMILIES:
            continue
        out.append(RouteRule(_FAMILIES[r.family], r.priority, r.fwmark, r.fwmask, r.invert,
                             r.table, r.action, r.iifname, r.oifname, r.others,
                             r.family in local and local[r.family] < r.priority))
    return tuple(sorted(out, key=lambda r: (r.family, r.priority)))


def socket_marks(diag_sockets, wg_devices) -> tuple[SocketMark, ...]:
    """Marked senders, from netlink.route.DiagSocket and WgDevice answers: one entry per
    (mark, family, protocol), the first socket named and the others counted."""
    out: list[SocketMark] = [
        SocketMark(d.fwmark, "inet", f"WireGuard link {d.ifname} (fwmark, port {d.listen_port})")
        for d in wg_devices if d.fwmark]
    groups: dict[tuple, list] = {}
    for s in diag_sockets:
        if s.mark:
            groups.setdefault((s.mark, s.family, s.protocol), []).append(s)
    for (mark, family, protocol), socks in sorted(groups.items()):
        first = min(socks, key=lambda s: s.address)
        proto = {6: "tcp", 17: "udp"}.get(protocol, str(protocol))
        out.append(SocketMark(mark, _FAMILIES.get(family, "inet"),
                              f"{proto} socket {first.address} (SO_MARK)", len(socks) - 1))
    return tuple(out)


# --- owners ----------------------------------------------------------------------------------

# Routing rules, by what their writers put in them. Each: (owner, test, source).
def _wg_quick(r: RouteRule) -> bool:
    # wg-quick's default route: `ip rule add not fwmark $table table $table`, the table and
    # the fwmark both 51820 unless set (WireGuard/wireguard-tools src/wg-quick/linux.bash,
    # add_default)
    return r.invert and r.mask == ALL and r.mark == r.table and r.action == "lookup"


RULE_SIGNS = (
    # Netbird: `not fwmark 0x1bd00 lookup 7120` at priority 110 (netbirdio/netbird
    # client/internal/routemanager/systemops/systemops_linux.go getSetupRules:
    # NetbirdVPNTableID 0x1BD0, nbnet.ControlPlaneMark 0x1BD00)
    ("netbird", lambda r: r.table == 0x1BD0 or (r.mark & r.mask) == 0x1BD00),
    # Tailscale: fwmark 0x80000/0xff0000 lookup main / default / unreachable at 5210-5250,
    # lookup 52 at 5270 (tailscale/tailscale wgengine/router/router_linux.go ipRules;
    # tsconst LinuxBypassMarkNum 0x80000, LinuxFwmarkMask 0xff0000)
    ("tailscale", lambda r: r.mask == 0xFF0000 or r.table == 52),
    # Cilium: proxy return traffic, fwmark 0xa00/0xf00 lookup 2005 and 0x200/0xf00
    # lookup 2004 (cilium/cilium pkg/datapath/linux/linux_defaults: RouteTableToProxy,
    # RouteTableFromProxy, MagicMarkHostMask 0x0F00)
    ("cilium", lambda r: r.table in (2004, 2005) or r.mask == 0xF00),
    ("wg-quick", _wg_quick),
)
# Socket marks by value, when no routing rule names them.
SOCKET_SIGNS = (
    ("netbird", 0x1BD00, ALL),       # nbnet.ControlPlaneMark: its own sockets and wt0's
    ("tailscale", 0x80000, 0xFF0000),  # its bypass mark, on its own sockets
    ("wg-quick", 0xCA6C, ALL),       # wg-quick's default FwMark 51820
)


def rule_owner(rule: RouteRule) -> str:
    return next((owner for owner, fits in RULE_SIGNS if fits(rule)), UNKNOWN)


def socket_owner(sock: SocketMark, rules: tuple[RouteRule, ...] = ()) -> str:
    """The component whose packets carry the mark: the owner of a routing rule that
    exempts exactly these packets (`not fwmark M`), else the mark's known value."""
    for rule in rules:
        if rule.invert and rule.mask == ALL and rule.mark == sock.mark:
            owner = rule_owner(rule)
            if owner != UNKNOWN:
                return owner
    return next((owner for owner, value, mask in SOCKET_SIGNS if sock.mark & mask == value),
                UNKNOWN)
