"""Reading the marks outside nf_tables: routing policy rules, marked sockets, WireGuard
links' fwmarks, in the calling thread's network namespace.

Plain netlink sockets and fwgate.netlink.route's codec rather than pyroute2: importing
pyroute2 costs `fwgate conflicts` about 150 ms, as much as the analysis itself, and its
API differs between Debian 12's 0.7.2 and 0.9 (adapters/links.py). No `wg` binary."""
from __future__ import annotations

import errno
import os
import socket

from ..marks.routing import Outside, route_rules, socket_marks
from ..netlink.consts import NLM_F_DUMP_INTR, NLM_F_MULTI, NLMSG_DONE, NLMSG_ERROR
from ..netlink.messages import NLMSGHDR, error_code, parse
from ..netlink.route import (
    AF_INET, AF_INET6, GENL_ID_CTRL, IPPROTO_TCP, IPPROTO_UDP, NETLINK_GENERIC, NETLINK_ROUTE,
    NETLINK_SOCK_DIAG, RTM_NEWLINK, RTM_NEWRULE, SOCK_DIAG_BY_FAMILY, WG_GENL_NAME, decode_diag,
    decode_family_id, decode_link, decode_rule, decode_wg_device, diag_request, family_request,
    links_request, rules_request, wg_device_request,
)

_RECV = 1 << 16
_ANSWER_WITHIN = 5.0   # seconds: the kernel answers at once; never hang a check on it


class _Netlink:
    """One request, its answers' bodies (after nlmsghdr) of one message type."""

    def __init__(self, protocol: int):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)
        self.sock.settimeout(_ANSWER_WITHIN)
        self.sock.bind((0, 0))
        self.seq = int.from_bytes(os.urandom(2), "big")

    def __enter__(self) -> "_Netlink":
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()

    def ask(self, build, mtype: int, *args) -> list[bytes]:
        """Send build(*args, seq); return the bodies of the mtype answers. A dump the
        kernel marks interrupted is asked again."""
        for _ in range(5):
            self.seq = (self.seq + 1) & 0xFFFFFFFF
            self.sock.send(build(*args, self.seq))
            bodies, interrupted = self._collect(mtype)
            if not interrupted:
                return bodies
        raise OSError(errno.EAGAIN, "the table kept changing while it was dumped")

    def _collect(self, mtype: int) -> tuple[list[bytes], bool]:
        """Until the dump's DONE, an error or ACK, or the one answer of a request that
        is not a dump (no NLM_F_MULTI: nothing follows it)."""
        bodies, interrupted = [], False
        while True:
            buf = self.sock.recv(_RECV)
            for (_, kind, flags, seq, _), start, end in parse(buf):
                if seq != self.seq:
                    continue
                interrupted |= bool(flags & NLM_F_DUMP_INTR)
                if kind == NLMSG_DONE:
                    return bodies, interrupted
                if kind == NLMSG_ERROR:
                    code = error_code(buf, start)
                    if code:
                        raise OSError(code, os.strerror(code))
                    return bodies, interrupted
                if kind == mtype:
                    bodies.append(buf[start + NLMSGHDR.size:end])
                if not flags & NLM_F_MULTI:
                    return bodies, interrupted


def read_rules() -> list:
    with _Netlink(NETLINK_ROUTE) as nl:
        return [decode_rule(b) for family in (AF_INET, AF_INET6)
                for b in nl.ask(rules_request, RTM_NEWRULE, family)]


def read_marked_sockets() -> list:
    """TCP and UDP sockets of both families (marks need CAP_NET_ADMIN: without it the
    kernel leaves them out, and so do we)."""
    out = []
    with _Netlink(NETLINK_SOCK_DIAG) as nl:
        for family in (AF_INET, AF_INET6):
            for protocol in (IPPROTO_TCP, IPPROTO_UDP):
                try:
                    bodies = nl.ask(diag_request, SOCK_DIAG_BY_FAMILY, family, protocol)
                except OSError as exc:   # a kernel without that diag module
                    if exc.errno in (errno.ENOENT, errno.EOPNOTSUPP, errno.EINVAL):
                        continue
                    raise
                out += [decode_diag(b, protocol) for b in bodies]
    return out


def genl_family(name: str) -> int | None:
    """The generic netlink id of the family `name`, None when the kernel has none."""
    with _Netlink(NETLINK_GENERIC) as nl:
        try:
            (body,) = nl.ask(family_request, GENL_ID_CTRL, name)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise
    return decode_family_id(body)


def wireguard_family() -> int | None:
    """The id of "wireguard", None when the kernel has no WireGuard."""
    return genl_family(WG_GENL_NAME)


def read_wireguard() -> list:
    family = wireguard_family()
    if family is None:
        return []
    with _Netlink(NETLINK_ROUTE) as nl:
        names = [name for _, name, kind in map(decode_link, nl.ask(links_request, RTM_NEWLINK))
                 if kind == "wireguard"]
    devices = []
    with _Netlink(NETLINK_GENERIC) as nl:
        for name in names:
            try:
                devices += [decode_wg_device(b) for b in nl.ask(wg_device_request, family, family,
                                                                name)]
            except OSError as exc:
                if exc.errno != errno.ENODEV:   # gone since the link dump
                    raise
    return devices


def read_outside() -> Outside:
    """Everything outside nf_tables that writes or tests a packet mark."""
    return Outside(route_rules(read_rules()),
                   socket_marks(read_marked_sockets(), read_wireguard()))


def read_outside_or_why() -> tuple[Outside | None, str | None]:
    """read_outside(), or None and why not: without them the nf_tables part still holds."""
    try:
        return read_outside(), None
    except OSError as exc:
        return None, f"routing rules and socket marks left out: {exc.strerror or exc}"
