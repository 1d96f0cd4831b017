"""The line iptables-save prints for a rule iptables-nft reads without an error: what
kube-router's next restore (iptables-save -t filter | iptables-restore -T filter) writes
back in its place. Pure: a rule and a reader profile in, text out.

It follows iptables' own two steps, as upstream writes them:

1. nft_rule_to_iptables_command_state (nft-ruleparse.c and nft-ruleparse-ipv4.c/-ipv6.c
   from 1.8.10, nft-shared.c, nft-ipv4.c, nft-ipv6.c in 1.8.9) fills the rule's
   command state: addresses with masks, interfaces, the protocol, `-f`, a list of
   matches in the order it makes them, a target or a verdict. It only knows the
   expressions it has a case for; the rest it skips.
2. nft_ipv4_save_rule / nft_ipv6_save_rule print it: save_ipv4_addr/save_ipv6_addr,
   save_rule_details (-i, -o, -p, -f), then save_matches_and_target (each match's
   save callback in extensions/libxt_*.c, libipt_*.c, libip6t_*.c, then -j/-g).

Only ip and ip6 are rendered (kube-router restores nothing else). None where the model
cannot tell the text: an interface by index other than lo, an x_tables match or target
other than comment, a UDP port negation 1.8.9 writes into a tcp match.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from ..model import Rule
from ..netlink import consts as C
from ..netlink.registers import BYTEORDER
from .parser import _ICMP, _ICMPV6, _TCP, _UDP, port_range_after
from .parser import _slot as _iptables_slot
from .profiles import Profile

# libxtables/xtables.c xtables_chain_protos (1.8.11 adds dccp, ipcomp): the names
# proto_to_name finds first; 1.8.9 then asks getprotobynumber (/etc/protocols).
_CHAIN_PROTOS = {6: "tcp", 132: "sctp", 17: "udp", 136: "udplite", 1: "icmp", 58: "ipv6-icmp",
                 50: "esp", 51: "ah", 135: "mobility-header"}
_CHAIN_PROTOS_1811 = {33: "dccp", 108: "ipcomp"}
_ETC_PROTOCOLS = {2: "igmp", 4: "ipencap", 41: "ipv6", 47: "gre", 33: "dccp", 94: "ipip",
                  103: "pim", 108: "ipcomp", 112: "vrrp", 115: "l2tp", 0: "ip"}
_TCP_FLAG_NAMES = ((0x01, "FIN"), (0x02, "SYN"), (0x04, "RST"), (0x08, "PSH"), (0x10, "ACK"),
                   (0x20, "URG"))
_PKTTYPES = {0: "unicast", 1: "broadcast", 2: "multicast", 3: "otherhost"}
_XT_LIMIT_SCALE = 10000
_RATES = (("day", _XT_LIMIT_SCALE * 24 * 60 * 60), ("hour", _XT_LIMIT_SCALE * 60 * 60),
          ("min", _XT_LIMIT_SCALE * 60), ("sec", _XT_LIMIT_SCALE))
_VERDICT_TARGETS = {"accept": "ACCEPT", "drop": "DROP", "return": "RETURN"}
_NO_QUOTE = set("_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class Unrenderable(Exception):
    """The model cannot tell what iptables-save prints for this rule."""


@dataclass
class _Reg:
    kind: str = "undef"     # undef | payload | meta | immediate
    base: int = 0
    offset: int = 0
    length: int = 0
    key: int = 0
    data: bytes = b""
    mask: bytes | None = None


@dataclass
class _State:
    """struct iptables_command_state, as much of it as save prints."""

    src: tuple[bytes, bytes, bool] | None = None   # address, mask, inverted
    dst: tuple[bytes, bytes, bool] | None = None
    # interfaces: the name buffer parse_ifname copies into (never cleared), the length
    # of its mask (1.8.9/1.8.10 only), inverted
    ifaces: dict = field(default_factory=lambda: {d: [bytearray(16), 0, False] for d in "io"})
    proto: int = 0
    proto_inv: bool = False
    frag: tuple[bool, bool] | None = None          # -f, inverted
    matches: list[list] = field(default_factory=list)   # [name, options dict]
    target: tuple[str, str] | None = None          # (name, options text)
    jumpto: str = ""
    goto: bool = False


def _slot(reg: int) -> int:
    """iptables' register index (nft_xt_ctx_get_sreg/dreg), as the reader keeps it."""
    slot = _iptables_slot(reg)
    if slot is None:
        raise Unrenderable("unknown register")
    return slot


class _Reader:
    """nft_rule_to_iptables_command_state, for values."""

    def __init__(self, family: str, table: str, profile: Profile):
        self.family, self.table, self.p = family, table, profile
        self.regs: dict[int, _Reg] = {}
        self.cs = _State()

    def reg(self, num: int) -> _Reg:
        return self.regs.get(_slot(num), _Reg())

    def match(self, name: str, reuse: bool = False) -> dict:
        """nft_create_match: a new match at the end, or (reuse) the rule's one of that name."""
        if reuse:
            for n, opts in self.cs.matches:
                if n == name:
                    return opts
        opts: dict = {}
        self.cs.matches.append([name, opts])
        return opts

    def l4_match(self, name: str) -> tuple[dict, bool]:
        """The tcp/udp match a port or flags test lands in, and whether it is of the
        test's own protocol. 1.8.9 keeps one per rule (ctx->tcpudp, a union): a test of
        the other protocol writes into the first one's memory."""
        if self.p.tcpudp_shared:
            for n, opts in self.cs.matches:
                if n in ("tcp", "udp"):
                    return opts, n == name
        return self.match(name, reuse=True), True

    def set_target(self, name: str, options: str = "") -> None:
        self.cs.target, self.cs.jumpto = (name, options), name

    # expressions
    def payload(self, f: dict) -> None:
        if "sreg" in f:
            return  # a header rewrite: iptables reads nothing of it
        self.regs[_slot(f.get("dreg", 0))] = _Reg("payload", base=f.get("base", 0),
                                                 offset=f.get("offset", 0),
                                                 length=int(f.get("len", 0)))

    def meta(self, f: dict) -> None:
        if "sreg" not in f:
            self.regs[_slot(f.get("dreg", 0))] = _Reg("meta", key=f.get("key", 0))
            return
        r = self.reg(f["sreg"])
        if f.get("key") == C.META_MARK:  # 1.8.10+: -j MARK (1.8.9 fails: never a misread)
            mark = int.from_bytes(r.data[:4].ljust(4, b"\0"), BYTEORDER)
            mask = int.from_bytes(r.mask[:4], BYTEORDER) if r.mask else 0xffffffff
            self.set_target("MARK", f" --set-xmark 0x{mark:x}/0x{mask:x}")
        elif f.get("key") == C.META_NFTRACE:
            self.set_target("TRACE")

    def immediate(self, f: dict) -> None:
        data = f.get("data")
        if isinstance(data, bytes):
            self.regs[_slot(f.get("dreg", 0))] = _Reg("immediate", data=data)
            return
        verdict, chain = data if isinstance(data, tuple) else ("", None)
        if verdict in _VERDICT_TARGETS:
            if verdict == "accept" and self.cs.jumpto and self.table == "broute":
                return
            self.set_target(_VERDICT_TARGETS[verdict])
        elif verdict in ("jump", "goto"):
            self.cs.goto |= verdict == "goto"
            self.cs.jumpto = chain or ""

    def bitwise(self, f: dict) -> None:
        src = self.reg(f.get("sreg", 0))
        dst = _Reg(**vars(src))
        mask = f.get("mask")
        dst.mask = mask if isinstance(mask, bytes) else b""
        self.regs[_slot(f.get("dreg", 0))] = dst

    def cmp(self, f: dict) -> None:
        r = self.reg(f.get("sreg", 0))
        data, op = f.get("data") or b"", f.get("op", C.CMP_EQ)
        if r.kind == "meta":
            self.meta_cmp(r, data, op)
        elif r.kind == "payload" and r.base == C.PAYLOAD_NETWORK:
            (self.ip_payload if self.family == "ip" else self.ip6_payload)(r, data, op)
        elif r.kind == "payload" and r.base == C.PAYLOAD_TRANSPORT:
            self.transport(r, data, op)

    def meta_cmp(self, r: _Reg, data: bytes, op: int) -> None:
        inv = op == C.CMP_NEQ
        key = r.key
        if key == C.META_L4PROTO:
            self.cs.proto = data[0]
            self.cs.proto_inv |= inv
        elif key in (C.META_IIF, C.META_OIF):
            if int.from_bytes(data[:4], BYTEORDER) != 1:
                raise Unrenderable("an interface by index: its name is the node's")
            # if_indextoname writes "lo\0"; 1.8.9/1.8.10 set the mask for strlen + 1
            entry = self.cs.ifaces["i" if key == C.META_IIF else "o"]
            entry[0][:3] = b"lo\0"
            entry[1] = max(entry[1], 3)
            entry[2] |= inv
        elif key in (C.META_IIFNAME, C.META_OIFNAME, C.META_BRI_IIFNAME, C.META_BRI_OIFNAME):
            entry = self.cs.ifaces["i" if key in (C.META_IIFNAME, C.META_BRI_IIFNAME) else "o"]
            entry[2] |= inv   # IPT_INV_VIA_* is set, never cleared
            _parse_ifname(entry, data)
        elif key == C.META_MARK:
            opts = self.match("mark")
            opts["inv"] = inv
            opts["mark"] = int.from_bytes(data[:4].ljust(4, b"\0"), BYTEORDER)
            opts["mask"] = int.from_bytes(r.mask[:4].ljust(4, b"\0"), BYTEORDER) \
                if r.mask is not None else 0xffffffff
        elif key == C.META_PKTTYPE:
            opts = self.match("pkttype")
            opts["inv"], opts["type"] = inv, data[0]

    def address(self, which: str, r: _Reg, data: bytes, op: int, size: int) -> None:
        addr = data[:size].ljust(size, b"\0")   # get_cmp_data copies the address's size
        if r.mask is not None:
            mask = r.mask[:size].ljust(size, b"\0")
        else:
            mask = (b"\xff" * min(r.length, size)).ljust(size, b"\0")
        old = getattr(self.cs, which)
        setattr(self.cs, which, (addr, mask, op == C.CMP_NEQ or bool(old and old[2])))

    def ip_payload(self, r: _Reg, data: bytes, op: int) -> None:
        if r.offset in (12, 16):
            self.address("src" if r.offset == 12 else "dst", r, data, op, 4)
        elif r.offset == 9:
            self.cs.proto = data[0]
            self.cs.proto_inv |= op == C.CMP_NEQ
        elif r.offset == 6:
            # get_frag: `frag-off & 0x1fff == 0` is `! -f`
            inv = r.mask is not None and op == C.CMP_EQ
            self.cs.frag = (True, inv or bool(self.cs.frag and self.cs.frag[1]))
        elif r.offset == 8:
            self.hop_limit("ttl", data, op)

    def ip6_payload(self, r: _Reg, data: bytes, op: int) -> None:
        if r.offset in (8, 24):
            self.address("src" if r.offset == 8 else "dst", r, data, op, 16)
        elif r.offset == 6:  # nexthdr, and (a missing break) a hop-limit match of it
            self.cs.proto = data[0]
            self.cs.proto_inv |= op == C.CMP_NEQ
            self.hop_limit("hl", data, op)
        elif r.offset == 7:
            self.hop_limit("hl", data, op)

    def hop_limit(self, name: str, data: bytes, op: int) -> None:
        """nft_parse_hl: <= and >= become < and > of the next value."""
        value = data[0] if len(data) == 1 else 0   # nftnl_expr_get_u8 of longer data: 0
        mode = {C.CMP_EQ: "eq", C.CMP_NEQ: "ne", C.CMP_LT: "lt", C.CMP_GT: "gt",
                C.CMP_LTE: "lt", C.CMP_GTE: "gt"}[op]
        value += 1 if op == C.CMP_LTE else -1 if op == C.CMP_GTE else 0
        opts = self.match(name)
        opts["mode"], opts["value"] = mode, value

    def transport(self, r: _Reg, data: bytes, op: int) -> None:
        proto = self.cs.proto
        if proto in (_ICMP, _ICMPV6):
            self.icmp(r, data)
            return
        if proto not in (_TCP, _UDP):
            return
        name = "tcp" if proto == _TCP else "udp"
        n = len(data)
        if r.offset == 0 and n in (2, 4):
            self.port(name, "s", op, int.from_bytes(data[:2], "big"))
            if n == 4:
                self.port(name, "d", op, int.from_bytes(data[2:4], "big"))
        elif r.offset == 2 and n == 2:
            self.port(name, "d", op, int.from_bytes(data, "big"))
        elif r.offset == 13 and n == 1 and proto == _TCP:
            opts, own = self.l4_match("tcp")
            if not own:
                return  # beyond struct xt_udp: never printed
            opts["flags_inv"] = opts.get("flags_inv", False) or op == C.CMP_NEQ
            opts["flags"] = (r.mask[0] if r.mask else 0xff, data[0])

    def invert(self, name: str, opts: dict, key: str, own: bool) -> None:
        if own:
            opts[key] = True
        elif name == "udp":
            # xt_udp's invflags is xt_tcp's `option` byte: `--tcp-option N` appears
            raise Unrenderable("a UDP port negation inside 1.8.9's shared tcp match")
        # a tcp negation inside the udp match lands past struct xt_udp: lost

    def port(self, name: str, end: str, op: int, port: int) -> None:
        """port_match_single_to_range."""
        opts, own = self.l4_match(name)
        if op == C.CMP_NEQ:
            self.invert(name, opts, end + "inv", own)
        opts[end] = port_range_after(*opts.get(end, (0, 65535)), op, port, port)

    def icmp(self, r: _Reg, data: bytes) -> None:
        """nft_parse_icmp: a new match per test, from the value alone."""
        kind, code = 255, (0, 255)
        if r.offset == 0:
            kind = data[0]
            if len(data) == 2:
                code = (data[1], data[1])
        else:
            code = (data[0], data[0])
        opts = self.match("icmp" if self.family == "ip" else "icmp6")
        opts["type"], opts["code"] = kind, code

    def range(self, f: dict) -> None:
        r = self.reg(f.get("sreg", 0))
        low, high = f.get("from") or b"", f.get("to") or b""
        if r.kind != "payload" or r.base != C.PAYLOAD_TRANSPORT or len(low) != 2 \
                or self.cs.proto not in (_TCP, _UDP) or r.offset not in (0, 2):
            return
        op = f.get("op", C.CMP_EQ)
        if op not in (C.CMP_EQ, C.CMP_NEQ):
            return
        end = "s" if r.offset == 0 else "d"
        name = "tcp" if self.cs.proto == _TCP else "udp"
        opts, own = self.l4_match(name)
        opts[end] = (int.from_bytes(low, "big"), int.from_bytes(high[:2], "big"))
        if op == C.CMP_NEQ:
            self.invert(name, opts, end + "inv", own)

    def limit(self, f: dict) -> None:
        opts = self.match("limit")
        rate = int(f.get("rate", 0))
        opts["avg"] = _XT_LIMIT_SCALE * int(f.get("unit", 0)) // rate if rate else 0
        opts["burst"] = int(f.get("burst", 0))

    def log(self, f: dict) -> None:
        text = ""
        if f.get("prefix"):
            text += f" --nflog-prefix{_save_string(str(f['prefix']))}"
        if f.get("group"):
            text += f" --nflog-group {f['group']}"
        if "snaplen" in f:
            text += f" --nflog-size {f['snaplen']}"
        threshold = f.get("qthreshold", 0)
        if threshold != 0:   # XT_NFLOG_DEFAULT_THRESHOLD (linux/netfilter/xt_NFLOG.h)
            text += f" --nflog-threshold {threshold}"
        self.set_target("NFLOG", text)

    def xt_match(self, f: dict) -> None:
        if f.get("name") != "comment":
            raise Unrenderable(f"the {f.get('name')} match's options")
        info = f.get("info") or b""
        opts = self.match("comment")
        opts["text"] = info.split(b"\0", 1)[0].decode(errors="replace")

    def xt_target(self, f: dict) -> None:
        raise Unrenderable(f"the {f.get('name')} target's options")


_HANDLERS = {"payload": _Reader.payload, "meta": _Reader.meta, "immediate": _Reader.immediate,
             "bitwise": _Reader.bitwise, "cmp": _Reader.cmp, "range": _Reader.range,
             "limit": _Reader.limit, "log": _Reader.log, "match": _Reader.xt_match,
             "target": _Reader.xt_target}


def _parse_ifname(entry: list, data: bytes) -> None:
    """parse_ifname: the name is copied over what the buffer held; one without its NUL
    is a prefix, marked with `+`. The mask (1.8.9/1.8.10) only ever grows."""
    n = len(data)
    if n == 0:
        return
    if n > 16:
        raise Unrenderable("an interface name longer than IFNAMSIZ")
    buf = entry[0]
    buf[:n] = data
    if data[-1] == 0:
        entry[1] = max(entry[1], len(data.split(b"\0", 1)[0]) + 1)
        return
    if n >= 16:
        return
    buf[n] = ord("+")
    if n + 1 >= 16:
        return
    buf[n + 1] = 0
    entry[1] = max(entry[1], n)


def _iface_text(entry: list, masks: bool) -> str | None:
    """save_iface: by the mask up to 1.8.10, the name as it stands from 1.8.11."""
    buf, mask, _ = entry
    if not masks:
        name = bytes(buf).split(b"\0", 1)[0].decode(errors="replace")
        return name if name and (name != "+" or entry[2]) else None
    if mask == 0:
        return None
    out = ""
    for i in range(16):
        if i < mask:
            out += chr(buf[i]) if buf[i] else ""
        else:
            out += "+" if buf[i - 1] else ""
            break
    return out


def _save_string(value: str) -> str:
    """xtables_save_string: bare when safe, else double-quoted with \\ escapes."""
    if value and set(value) <= _NO_QUOTE:
        return f" {value}"
    escaped = "".join("\\" + ch if ch in "\"\\'" else ch for ch in value)
    return f' "{escaped}"'


def _ipv4(addr: bytes, mask: bytes, inv: bool, letter: str) -> str:
    """save_ipv4_addr with mask_to_str: a prefix length, or a dotted mask."""
    if not any(mask) and not inv and not any(addr):
        return ""
    bits = int.from_bytes(mask, "big")
    length = next((n for n in range(33) if bits == (0xffffffff << (32 - n)) & 0xffffffff), None)
    shown = str(length) if length is not None else str(ipaddress.IPv4Address(mask))
    return f"{' !' if inv else ''} -{letter} {ipaddress.IPv4Address(addr)}/{shown}"


def _inet_ntop6(addr: bytes) -> str:
    """glibc's inet_ntop: like Python's compressed form, but ::a.b.c.d and
    ::ffff:a.b.c.d for addresses that embed an IPv4 one."""
    words = [int.from_bytes(addr[i:i + 2], "big") for i in range(0, 16, 2)]
    if words[:5] == [0] * 5 and (words[5] == 0xffff or (words[5] == 0 and words[6])):
        v4 = ipaddress.IPv4Address(addr[12:])
        return f"::ffff:{v4}" if words[5] else f"::{v4}"
    return ipaddress.IPv6Address(addr).compressed


def _ipv6(addr: bytes, mask: bytes, inv: bool, letter: str) -> str:
    """save_ipv6_addr: nothing for `::/0` unless inverted; a prefix length, else the mask."""
    bits = int.from_bytes(mask, "big")
    full = (1 << 128) - 1
    length = next((n for n in range(129) if bits == (full << (128 - n)) & full), -1)
    if not inv and length == 0:
        return ""
    shown = str(length) if length >= 0 else _inet_ntop6(mask)
    return f"{' !' if inv else ''} -{letter} {_inet_ntop6(addr)}/{shown}"


def _proto_name(proto: int, profile: Profile) -> str:
    """proto_to_name: xtables_chain_protos first; 1.8.9 then /etc/protocols (lookup
    on), 1.8.11 not (nolookup: save_rule_details passes true)."""
    only = profile.save_chain_protos_only
    table = {**_CHAIN_PROTOS, **(_CHAIN_PROTOS_1811 if only else {})}
    if proto in table:
        return table[proto]
    if not only and proto in _ETC_PROTOCOLS:
        return _ETC_PROTOCOLS[proto]
    return str(proto)


def _tcp_flags(flags: int) -> str:
    names = [name for bit, name in _TCP_FLAG_NAMES if flags & bit]
    return ",".join(names) or "NONE"


def _ports(opts: dict, end: str, inverted_full_shown: bool) -> str:
    lo, hi = opts.get(end, (0, 65535))
    inv = opts.get(end + "inv", False)
    # 1.8.11 (a86eb41e) prints an inverted full range; 1.8.9 skips any full range
    if lo == 0 and hi == 65535 and not (inv and inverted_full_shown):
        return ""
    name = "--sport" if end == "s" else "--dport"
    return f"{' !' if inv else ''} {name} {lo}" + (f":{hi}" if lo != hi else "")


def _rate(period: int) -> str:
    """libxt_limit.c print_rate."""
    if period == 0:
        return " inf"
    i = 1
    while i < len(_RATES):
        mult = _RATES[i][1]
        if period > mult or mult // period < mult % period:
            break
        i += 1
    name, mult = _RATES[i - 1]
    return f" {mult // period}/{name}"


def _match_text(name: str, o: dict, profile: Profile) -> str:
    if name in ("tcp", "udp"):
        full = profile.save_inverted_full_range
        text = _ports(o, "s", full) + _ports(o, "d", full)
        if name == "tcp" and "flags" in o:
            mask, cmp = o["flags"]
            if mask or o.get("flags_inv"):
                text += f"{' !' if o.get('flags_inv') else ''} --tcp-flags {_tcp_flags(mask)} " \
                        f"{_tcp_flags(cmp)}"
        return text
    if name == "icmp":
        kind, (lo, hi) = o["type"], o["code"]
        any_code = (lo, hi) == (0, 255)
        if kind == 255 and (any_code or not profile.icmp_any_code_shown):
            return " --icmp-type any"
        return f" --icmp-type {kind}" + ("" if any_code else f"/{lo}")
    if name == "icmp6":
        kind, (lo, hi) = o["type"], o["code"]
        return f" --icmpv6-type {kind}" + ("" if (lo, hi) == (0, 255) else f"/{lo}")
    if name == "mark":
        shown = f"0x{o['mark']:x}" if o["mask"] == 0xffffffff else \
            f"0x{o['mark']:x}/0x{o['mask']:x}"
        return f"{' !' if o['inv'] else ''} --mark {shown}"
    if name == "pkttype":
        return f"{' !' if o['inv'] else ''} --pkt-type {_PKTTYPES.get(o['type'], o['type'])}"
    if name in ("ttl", "hl"):
        option = {"eq": "eq", "ne": "eq", "lt": "lt", "gt": "gt"}[o["mode"]]
        neg = "! " if o["mode"] == "ne" else ""
        return f" {neg}--{name}-{option} {o['value']}"
    if name == "limit":
        return " --limit" + _rate(o["avg"]) + \
            (f" --limit-burst {o['burst']}" if o["burst"] != 5 else "")
    if name == "comment":
        return " --comment" + _save_string(o["text"])
    raise Unrenderable(f"the {name} match")


def _comment(rule: Rule) -> str | None:
    """get_comment: nft's NFTNL_UDATA_RULE_COMMENT TLV (raw userdata is not one)."""
    comment = rule.comment_tlv()
    return None if comment is None else comment.split(b"\0", 1)[0].decode(errors="replace")


def saved_line(rule: Rule, profile: Profile) -> str | None:
    """`-A CHAIN …` as this version's iptables-save prints the rule; None when the model
    cannot tell (see the module's docstring). Meant for rules the version reads without
    an error (a misread, or a clean rule)."""
    if rule.family not in ("ip", "ip6"):
        return None
    reader = _Reader(rule.family, rule.table, profile)
    try:
        for expr in rule.exprs:
            handler = _HANDLERS.get(expr.name)
            if handler is not None:
                handler(reader, expr.fields)
        comment = _comment(rule)
        if comment is not None:
            reader.match("comment")["text"] = comment
        return f"-A {rule.chain}" + _render(reader.cs, rule.family, profile)
    except (Unrenderable, ValueError, TypeError, KeyError, IndexError):
        return None


def _render(cs: _State, family: str, profile: Profile) -> str:
    addr = _ipv4 if family == "ip" else _ipv6
    out = ""
    for letter, value in (("s", cs.src), ("d", cs.dst)):
        if value is not None:
            out += addr(*value, letter)
    for letter in "io":
        name = _iface_text(cs.ifaces[letter], profile.interface_masks)
        if name is not None:
            out += f"{' !' if cs.ifaces[letter][2] else ''} -{letter} {name}"
    if cs.proto:
        out += f"{' !' if cs.proto_inv else ''} -p {_proto_name(cs.proto, profile)}"
    if cs.frag:
        out += f"{' !' if cs.frag[1] else ''} -f"
    for name, opts in cs.matches:
        out += f" -m {name}" + _match_text(name, opts, profile)
    if cs.target is not None:
        out += f" -j {cs.jumpto}{cs.target[1]}"
    elif cs.jumpto:
        out += f" -{'g' if cs.goto else 'j'} {cs.jumpto}"
    return out
