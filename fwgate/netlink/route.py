"""Marks the kernel keeps outside nf_tables, as netlink carries them. Pure codec.

Three families of messages, each a request builder and a decoder:
- rtnetlink RTM_GETRULE: the routing policy rules (`ip rule`), whose fwmark selectors
  test packet marks (include/uapi/linux/fib_rules.h);
- sock_diag SOCK_DIAG_BY_FAMILY: inet sockets with their SO_MARK, INET_DIAG_MARK
  (include/uapi/linux/inet_diag.h; the kernel adds it for CAP_NET_ADMIN only);
- generic netlink "wireguard" WG_CMD_GET_DEVICE: a WireGuard link's fwmark, the mark
  its UDP packets leave with (include/uapi/linux/wireguard.h), after the controller
  resolves the family's id (include/uapi/linux/genetlink.h), and RTM_GETLINK to find
  the links of kind "wireguard" (include/uapi/linux/if_link.h).

Unlike nfnetlink, these attributes carry host-endian numbers (but ports and addresses
in inet_diag_sockid, which are network order)."""
from __future__ import annotations

import ipaddress
import struct
from typing import NamedTuple

from .attrs import as_str, attr, attr_str, attrs, iter_attrs
from .messages import NLMSGHDR
from .consts import NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST

AF_INET, AF_INET6 = 2, 10
NETLINK_ROUTE, NETLINK_SOCK_DIAG, NETLINK_GENERIC = 0, 4, 16
_U16, _U32 = struct.Struct("=H"), struct.Struct("=I")   # host order, unlike nf_tables'


def _u32(raw: bytes) -> int:
    return _U32.unpack_from(raw)[0]


def _attr_u32(kind: int, value: int) -> bytes:
    return attr(kind, _U32.pack(value))


def request(mtype: int, seq: int, body: bytes, flags: int = NLM_F_REQUEST | NLM_F_DUMP) -> bytes:
    """One netlink request: nlmsghdr + body."""
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), mtype, flags, seq, 0) + body


# --- routing policy rules (fib_rules.h) -------------------------------------------------

RTM_NEWRULE, RTM_GETRULE = 32, 34
# struct fib_rule_hdr { u8 family, dst_len, src_len, tos, table, res1, res2, action; u32 flags; }
FIB_RULE_HDR = struct.Struct("=BBBBBBBBI")
FIB_RULE_INVERT = 0x2
FRA_DST, FRA_SRC, FRA_IIFNAME, FRA_GOTO, FRA_PRIORITY = 1, 2, 3, 4, 6
FRA_FWMARK, FRA_FLOW, FRA_TUN_ID, FRA_SUPPRESS_IFGROUP, FRA_SUPPRESS_PREFIXLEN = 10, 11, 12, 13, 14
FRA_TABLE, FRA_FWMASK, FRA_OIFNAME = 15, 16, 17
FRA_L3MDEV, FRA_UID_RANGE, FRA_PROTOCOL, FRA_IP_PROTO, FRA_SPORT_RANGE, FRA_DPORT_RANGE = \
    19, 20, 21, 22, 23, 24
# enum { FR_ACT_UNSPEC, FR_ACT_TO_TBL, FR_ACT_GOTO, FR_ACT_NOP, FR_ACT_RES3, FR_ACT_RES4,
#        FR_ACT_BLACKHOLE, FR_ACT_UNREACHABLE, FR_ACT_PROHIBIT }
FR_ACTIONS = {1: "lookup", 2: "goto", 3: "nop", 6: "blackhole", 7: "unreachable", 8: "prohibit"}
# Selectors beside the mark and the interfaces: a rule with one of them applies to fewer
# packets than its mark test alone says.
_OTHER_SELECTORS = {FRA_DST: "to", FRA_SRC: "from", FRA_FLOW: "realms", FRA_TUN_ID: "tun_id",
                    FRA_L3MDEV: "l3mdev", FRA_UID_RANGE: "uidrange", FRA_IP_PROTO: "ipproto",
                    FRA_SPORT_RANGE: "sport", FRA_DPORT_RANGE: "dport"}


class FibRule(NamedTuple):
    family: int
    priority: int
    table: int
    action: str
    invert: bool
    fwmark: int
    fwmask: int          # 0: the rule tests no mark
    iifname: str | None
    oifname: str | None
    suppress_prefixlen: int | None
    others: tuple[str, ...]   # the other selectors it has ("from", "to", ...)


def rules_request(family: int, seq: int) -> bytes:
    return request(RTM_GETRULE, seq, FIB_RULE_HDR.pack(family, 0, 0, 0, 0, 0, 0, 0, 0))


def decode_rule(payload: bytes) -> FibRule:
    """An RTM_NEWRULE message's body (after nlmsghdr)."""
    family, dst_len, src_len, tos, table, _, _, action, flags = FIB_RULE_HDR.unpack_from(payload)
    a = attrs(payload, FIB_RULE_HDR.size)
    fwmark = _u32(a[FRA_FWMARK]) if FRA_FWMARK in a else 0
    # fib_nl_fill_rule sends FRA_FWMASK whenever a mark or mask is set; `fwmark X`
    # alone means the whole mark (fib_nl2rule: mask 0xFFFFFFFF when only a mark is given)
    fwmask = _u32(a[FRA_FWMASK]) if FRA_FWMASK in a else (0xFFFFFFFF if fwmark else 0)
    suppress = a.get(FRA_SUPPRESS_PREFIXLEN)
    suppress_len = struct.unpack_from("=i", suppress)[0] if suppress else -1
    others = tuple(word for kind, word in _OTHER_SELECTORS.items() if kind in a)
    if tos:
        others += ("tos",)
    if (dst_len or src_len) and not (FRA_DST in a or FRA_SRC in a):
        others += ("prefix",)
    return FibRule(
        family, _u32(a[FRA_PRIORITY]) if FRA_PRIORITY in a else 0,
        _u32(a[FRA_TABLE]) if FRA_TABLE in a else table,
        FR_ACTIONS.get(action, f"action {action}"), bool(flags & FIB_RULE_INVERT),
        fwmark, fwmask,
        as_str(a[FRA_IIFNAME]) if FRA_IIFNAME in a else None,
        as_str(a[FRA_OIFNAME]) if FRA_OIFNAME in a else None,
        suppress_len if suppress_len >= 0 else None, others)


def encode_rule(rule: FibRule) -> bytes:
    """The body the kernel sends for `rule` (for decoder tests, and the inverse of it)."""
    found = [_attr_u32(FRA_TABLE, rule.table), _attr_u32(FRA_PRIORITY, rule.priority)]
    if rule.fwmark or rule.fwmask:
        found += [_attr_u32(FRA_FWMARK, rule.fwmark), _attr_u32(FRA_FWMASK, rule.fwmask)]
    if rule.iifname:
        found.append(attr_str(FRA_IIFNAME, rule.iifname))
    if rule.oifname:
        found.append(attr_str(FRA_OIFNAME, rule.oifname))
    if rule.suppress_prefixlen is not None:
        found.append(attr(FRA_SUPPRESS_PREFIXLEN, struct.pack("=i", rule.suppress_prefixlen)))
    action = {v: k for k, v in FR_ACTIONS.items()}[rule.action]
    head = FIB_RULE_HDR.pack(rule.family, 0, 0, 0, min(rule.table, 252), 0, 0, action,
                             FIB_RULE_INVERT if rule.invert else 0)
    return head + b"".join(found)


# --- links (if_link.h) ------------------------------------------------------------------

RTM_NEWLINK, RTM_GETLINK = 16, 18
IFINFOMSG = struct.Struct("=BxHiII")   # family, type, index, flags, change
IFLA_IFNAME, IFLA_LINKINFO, IFLA_INFO_KIND = 3, 18, 1


def links_request(seq: int) -> bytes:
    return request(RTM_GETLINK, seq, IFINFOMSG.pack(0, 0, 0, 0, 0))


def decode_link(payload: bytes) -> tuple[int, str, str | None]:
    """(ifindex, name, kind) of an RTM_NEWLINK body; kind None when the link has none."""
    _, _, index, _, _ = IFINFOMSG.unpack_from(payload)
    name, kind = "", None
    for attr_kind, s, e in iter_attrs(payload, IFINFOMSG.size):
        if attr_kind == IFLA_IFNAME:
            name = as_str(payload[s:e])
        elif attr_kind == IFLA_LINKINFO:
            for info_kind, s2, e2 in iter_attrs(payload, s, e):
                if info_kind == IFLA_INFO_KIND:
                    kind = as_str(payload[s2:e2])
    return index, name, kind


# --- inet sockets (inet_diag.h, sock_diag.h) -------------------------------------------

SOCK_DIAG_BY_FAMILY = 20
IPPROTO_TCP, IPPROTO_UDP = 6, 17
# struct inet_diag_req_v2 { u8 family, protocol, ext, pad; u32 states; inet_diag_sockid id; }
DIAG_REQ = struct.Struct("=BBBxI48x")
# struct inet_diag_msg { u8 family, state, timer, retrans; inet_diag_sockid id;
#                        u32 expires, rqueue, wqueue, uid, inode; }
# struct inet_diag_sockid { be16 sport, dport; be32 src[4], dst[4]; u32 if; u32 cookie[2]; }
DIAG_MSG_HEAD = struct.Struct("=BBBB")
DIAG_SOCKID = struct.Struct("!HH16s16s")
DIAG_MSG_SIZE = 4 + 48 + 20
DIAG_INODE = struct.Struct("=I")
INET_DIAG_MARK = 15


class DiagSocket(NamedTuple):
    family: int
    protocol: int
    address: str        # local address and port, as `ss` prints them
    mark: int | None    # None: the kernel did not say (no CAP_NET_ADMIN)
    inode: int


def diag_request(family: int, protocol: int, seq: int) -> bytes:
    return request(SOCK_DIAG_BY_FAMILY, seq, DIAG_REQ.pack(family, protocol, 0, 0xFFFFFFFF))


def decode_diag(payload: bytes, protocol: int) -> DiagSocket:
    family = DIAG_MSG_HEAD.unpack_from(payload)[0]
    sport, _, src, _ = DIAG_SOCKID.unpack_from(payload, 4)
    inode = DIAG_INODE.unpack_from(payload, DIAG_MSG_SIZE - 4)[0]
    addr = ipaddress.ip_address(src[:4] if family == AF_INET else src)
    address = f"{addr}:{sport}" if family == AF_INET else f"[{addr}]:{sport}"
    mark = None
    for kind, s, e in iter_attrs(payload, DIAG_MSG_SIZE):
        if kind == INET_DIAG_MARK:
            mark = _u32(payload[s:e])
    return DiagSocket(family, protocol, address, mark, inode)


def encode_diag(sock: DiagSocket) -> bytes:
    """The body the kernel sends for `sock` (for decoder tests)."""
    addr = ipaddress.ip_address(sock.address.rsplit(":", 1)[0].strip("[]"))
    port = int(sock.address.rsplit(":", 1)[1])
    sockid = DIAG_SOCKID.pack(port, 0, addr.packed.ljust(16, b"\0"), bytes(16)) + bytes(12)
    body = DIAG_MSG_HEAD.pack(sock.family, 7, 0, 0) + sockid + struct.pack("=IIIII", 0, 0, 0, 0,
                                                                           sock.inode)
    return body + (_attr_u32(INET_DIAG_MARK, sock.mark) if sock.mark is not None else b"")


# --- generic netlink: the controller and wireguard -------------------------------------

GENL_ID_CTRL = 0x10
GENLMSGHDR = struct.Struct("=BBH")   # cmd, version, reserved
CTRL_CMD_GETFAMILY, CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME = 3, 1, 2
# include/uapi/linux/wireguard.h
WG_GENL_NAME, WG_GENL_VERSION = "wireguard", 1
WG_CMD_GET_DEVICE, WG_CMD_SET_DEVICE = 0, 1
(WGDEVICE_A_UNSPEC, WGDEVICE_A_IFINDEX, WGDEVICE_A_IFNAME, WGDEVICE_A_PRIVATE_KEY,
 WGDEVICE_A_PUBLIC_KEY, WGDEVICE_A_FLAGS, WGDEVICE_A_LISTEN_PORT, WGDEVICE_A_FWMARK,
 WGDEVICE_A_PEERS) = range(9)


class WgDevice(NamedTuple):
    ifname: str
    fwmark: int
    listen_port: int


def family_request(name: str, seq: int) -> bytes:
    body = GENLMSGHDR.pack(CTRL_CMD_GETFAMILY, 1, 0) + attr_str(CTRL_ATTR_FAMILY_NAME, name)
    return request(GENL_ID_CTRL, seq, body, flags=NLM_F_REQUEST)


def decode_family_id(payload: bytes) -> int:
    for kind, s, e in iter_attrs(payload, GENLMSGHDR.size):
        if kind == CTRL_ATTR_FAMILY_ID:
            return _U16.unpack_from(payload, s)[0]
    raise ValueError("generic netlink controller answer without a family id")


def wg_device_request(family_id: int, ifname: str, seq: int) -> bytes:
    # WG_CMD_GET_DEVICE is a dump (the peers may not fit one message), keyed by name
    body = GENLMSGHDR.pack(WG_CMD_GET_DEVICE, WG_GENL_VERSION, 0) + \
        attr_str(WGDEVICE_A_IFNAME, ifname)
    return request(family_id, seq, body)


def wg_set_fwmark_request(family_id: int, ifname: str, fwmark: int, seq: int) -> bytes:
    """WG_CMD_SET_DEVICE with a name and a fwmark (what `wg set IFACE fwmark M` sends)."""
    body = GENLMSGHDR.pack(WG_CMD_SET_DEVICE, WG_GENL_VERSION, 0) + \
        attr_str(WGDEVICE_A_IFNAME, ifname) + _attr_u32(WGDEVICE_A_FWMARK, fwmark)
    return request(family_id, seq, body, flags=NLM_F_REQUEST | NLM_F_ACK)


def decode_wg_device(payload: bytes) -> WgDevice:
    """A WG_CMD_GET_DEVICE answer's body (after nlmsghdr): genlmsghdr, then attributes.
    The fwmark is absent (0) when none is set."""
    name, fwmark, port = "", 0, 0
    for kind, s, e in iter_attrs(payload, GENLMSGHDR.size):
        if kind == WGDEVICE_A_IFNAME:
            name = as_str(payload[s:e])
        elif kind == WGDEVICE_A_FWMARK:
            fwmark = _u32(payload[s:e])
        elif kind == WGDEVICE_A_LISTEN_PORT:
            port = _U16.unpack_from(payload, s)[0]
    return WgDevice(name, fwmark, port)
