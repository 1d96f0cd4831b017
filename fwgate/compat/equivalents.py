"""Exact iptables encodings for rule shapes iptables-nft cannot read. Pure.

Only shapes whose meaning we can restate exactly are known here; everything
else returns None and is left alone.

Known shape (Netbird's `frwacceptoif`, and the plain `ct state` rule nft writes):

    [meta load iifname|oifname => reg A] [cmp eq|neq reg A "NAME"]     (optional)
    [ct load state => reg B] [bitwise reg B = (reg B & MASK) ^ 0] [cmp neq|eq reg B 0]
    [counter]                                                           (optional)
    [immediate reg 0 accept|drop|return|jump X|goto X]

becomes what `iptables [-i|-o NAME] -m conntrack [!] --ctstate STATES -j VERDICT`
writes: the interface test as iptables encodes it ("wt0\\0", 4 bytes), an xt
`conntrack` revision 3 match, a counter and the verdict.
"""
from __future__ import annotations

import struct
import sys
from dataclasses import dataclass

from ..model import Rule
from ..netlink import consts as C
from ..netlink import exprs as X

# struct xt_conntrack_mtinfo3 (linux/netfilter/xt_conntrack.h): 162 bytes of
# fields, padded to 164 by its u32 alignment; iptables sends XT_ALIGN(164) = 168.
CONNTRACK_REV = 3
_MTINFO3_SIZE = 168
_MATCH_FLAGS_AT = 146        # __u16 match_flags, invert_flags, state_mask (host order)
XT_CONNTRACK_STATE = 1 << 0

# nft `ct state` bits → xt_conntrack state bits. They agree except UNTRACKED:
# nft uses 1 << 6, xt_conntrack 1 << (IP_CT_NUMBER + 3) = 1 << 8.
_CT_STATE_TO_XT = {C.CT_STATE_INVALID: 1, C.CT_STATE_ESTABLISHED: 2, C.CT_STATE_RELATED: 4,
                   C.CT_STATE_NEW: 8, C.CT_STATE_UNTRACKED: 256}

_REWRITABLE_VERDICTS = ("accept", "drop", "return", "jump", "goto")
_IFNAME_KEYS = (C.META_IIFNAME, C.META_OIFNAME)


def conntrack_mtinfo3(state_mask: int, invert: bool = False) -> bytes:
    """xt_conntrack_mtinfo3 for `[!] --ctstate`, as libxt_conntrack fills it."""
    info = bytearray(_MTINFO3_SIZE)
    struct.pack_into("=HHH", info, _MATCH_FLAGS_AT, XT_CONNTRACK_STATE,
                     XT_CONNTRACK_STATE if invert else 0, state_mask)
    return bytes(info)


def xt_state_mask(nft_mask: int) -> int | None:
    """The xt_conntrack state mask for an nft ct state mask, or None if some bit has none."""
    out = 0
    for bit, xt_bit in _CT_STATE_TO_XT.items():
        if nft_mask & bit:
            out |= xt_bit
            nft_mask &= ~bit
    return out if out and not nft_mask else None


def iptables_ifname(data: bytes) -> bytes | None:
    """The name as iptables compares it: "wt0\\0" for an exact name, "eth" for `eth+`."""
    if b"\0" not in data:
        return data if 0 < len(data) < 16 else None  # prefix match: iptables' NAME+
    name, rest = data.split(b"\0", 1)
    if not name or len(name) > 15 or rest.strip(b"\0"):
        return None
    return name + b"\0"


@dataclass(frozen=True)
class Equivalent:
    """The iptables encoding of a rule, and how iptables would print it."""

    exprs: tuple[bytes, ...]   # NFTA_LIST_ELEM-encoded expressions, in iptables' order
    text: str                  # e.g. "-o wt0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"


def _state_names(xt_mask: int) -> str:
    # libxt_conntrack's print order
    names = ((1, "INVALID"), (8, "NEW"), (4, "RELATED"), (2, "ESTABLISHED"), (256, "UNTRACKED"))
    return ",".join(name for bit, name in names if xt_mask & bit)


def iptables_equivalent(rule: Rule) -> Equivalent | None:
    """What iptables itself writes for the same rule, if this is a known shape."""
    if rule.family not in ("ip", "ip6"):
        return None
    try:
        items = [(e.name, e.fields) for e in rule.exprs]
    except ValueError:
        return None
    out: list[bytes] = []
    text: list[str] = []
    i = 0

    def at(k: int, name: str) -> dict | None:
        return items[k][1] if k < len(items) and items[k][0] == name else None

    # Optional interface test.
    meta, cmp = at(i, "meta"), at(i + 1, "cmp")
    if meta is not None and meta.get("key") in _IFNAME_KEYS:
        if "sreg" in meta or cmp is None or cmp.get("sreg") != meta.get("dreg") \
                or cmp.get("op") not in (C.CMP_EQ, C.CMP_NEQ) or not isinstance(cmp.get("data"), bytes):
            return None
        name = iptables_ifname(cmp["data"])
        if name is None:
            return None
        out += [X.meta_load(meta["key"], 1), X.cmp(cmp["op"], name, 1)]
        flag = "-i" if meta["key"] == C.META_IIFNAME else "-o"
        shown = name.rstrip(b"\0").decode(errors="replace") + ("" if name.endswith(b"\0") else "+")
        text.append(f"{'! ' if cmp['op'] == C.CMP_NEQ else ''}{flag} {shown}")
        i += 2

    # Required: ct state & MASK != 0 (or == 0, the inverted form).
    ct, bw, test = at(i, "ct"), at(i + 1, "bitwise"), at(i + 2, "cmp")
    if ct is None or bw is None or test is None:
        return None
    reg = ct.get("dreg")
    mask, xor = bw.get("mask"), bw.get("xor")
    if (ct.get("key") != C.CT_STATE or "sreg" in ct or "direction" in ct
            or bw.get("sreg") != reg or bw.get("dreg") != reg or test.get("sreg") != reg
            or bw.get("op", 0) != 0 or bw.get("len") != 4
            or not isinstance(mask, bytes) or len(mask) != 4 or xor != b"\0" * 4
            or test.get("data") != b"\0" * 4 or test.get("op") not in (C.CMP_EQ, C.CMP_NEQ)):
        return None
    xt_mask = xt_state_mask(int.from_bytes(mask, sys.byteorder))
    if xt_mask is None:
        return None
    invert = test["op"] == C.CMP_EQ  # "no bit set" is `! --ctstate`
    out.append(X.xt("match", "conntrack", CONNTRACK_REV, conntrack_mtinfo3(xt_mask, invert)))
    text.append(f"-m conntrack {'! ' if invert else ''}--ctstate {_state_names(xt_mask)}")
    i += 3

    # Optional counter: iptables always writes one; keep the old counts.
    counter = at(i, "counter")
    if counter is not None:
        i += 1
    out.append(X.counter((counter or {}).get("packets", 0), (counter or {}).get("bytes", 0)))

    # Required verdict, and nothing after it.
    imm = at(i, "immediate")
    if imm is None or imm.get("dreg") != C.REG_VERDICT or i + 1 != len(items):
        return None
    data = imm.get("data")
    if not isinstance(data, tuple) or data[0] not in _REWRITABLE_VERDICTS:
        return None
    verdict, chain = data
    if verdict in ("jump", "goto") and not chain:
        return None
    out.append(X.verdict(C.VERDICT_CODES[verdict], chain if verdict in ("jump", "goto") else None))
    text.append({"jump": f"-j {chain}", "goto": f"-g {chain}"}.get(verdict, f"-j {verdict.upper()}"))
    return Equivalent(tuple(out), " ".join(text))
