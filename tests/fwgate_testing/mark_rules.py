"""nf_tables rules for the mark-model tests, built expression by expression: mark
writes and tests (native and x_tables), comments, verdicts, and small snapshots of them."""
from __future__ import annotations

import struct
import sys

from fwgate.marks.model import ALL
from fwgate.model import Chain, Expr, Rule, Snapshot, Table, TableRef
from fwgate.netlink import consts as C
from fwgate.netlink import exprs as X
from fwgate.netlink.exprs import split_expressions

HOST = sys.byteorder


def u32(value: int) -> bytes:
    return value.to_bytes(4, HOST)


# --- building rules -----------------------------------------------------------------

def exprs(*parts: bytes | list) -> tuple[Expr, ...]:
    out = []
    for part in parts:
        for blob in part if isinstance(part, list) else [part]:
            out += [Expr(n, r) for n, r in split_expressions(blob)]
    return tuple(out)


def rule(chain: str, *parts, family="ip", table="filter", handle=None, userdata=None) -> Rule:
    return Rule(family, table, chain, handle or 0, 0, exprs(*parts), userdata)


def set_mark(value: int, ct: bool = False) -> list[bytes]:
    """nft `meta mark set VALUE` (`ct mark set`): immediate into reg 1, then set from it."""
    kind, key = ("ct", C.CT_MARK) if ct else ("meta", C.META_MARK)
    return [X.immediate_data(u32(value)), X.build(kind, key=key, sreg=1)]


def mark_op(mask: int, xor: int) -> list[bytes]:
    """nft `meta mark set mark and MASK xor XOR`."""
    return [X.meta_load(C.META_MARK), X.bitwise(1, 1, u32(mask), u32(xor)),
            X.build("meta", key=C.META_MARK, sreg=1)]


def mark_test(value: int, mask: int = ALL, op: int = C.CMP_EQ, ct: bool = False) -> list[bytes]:
    load = X.ct_load(C.CT_MARK) if ct else X.meta_load(C.META_MARK)
    steps = [load]
    if mask != ALL:
        steps.append(X.bitwise(1, 1, u32(mask), u32(0)))
    return steps + [X.cmp(op, u32(value))]


def xt_mark(value: int, mask: int) -> bytes:        # MARK --set-xmark value/mask
    return X.xt("target", "MARK", 2, struct.pack("=II", value, mask))


def xt_connmark(mode: int, ctmark=0, ctmask=ALL, nfmask=ALL) -> bytes:
    return X.xt("target", "CONNMARK", 2, struct.pack("=IIIBBBx", ctmark, ctmask, nfmask, 0, 0, mode))


def xt_match(name: str, value: int, mask: int, invert=False) -> bytes:
    return X.xt("match", name, 1, struct.pack("=IIB3x", value, mask, invert) + b"\0" * 4)


def comment(text: str) -> bytes:
    return X.xt("match", "comment", 0, text.encode().ljust(256, b"\0"))


def verdict(name: str, chain: str | None = None) -> bytes:
    return X.verdict(C.VERDICT_CODES[name], chain)


IIF_WT0 = [X.meta_load(C.META_IIFNAME), X.cmp(C.CMP_EQ, X.ifname_bytes("wt0", True))]


def snapshot(*tables: tuple[str, str, list[Chain], list[Rule]]) -> Snapshot:
    out = {}
    for family, name, chains, rules in tables:
        numbered, handle = [], 100
        for c in chains:
            for position, r in enumerate(x for x in rules if x.chain == c.name):
                handle += 1
                numbered.append(Rule(family, name, r.chain, r.handle or handle, position, r.exprs,
                                     r.userdata))
        out[TableRef(family, name)] = Table(family, name, chains=tuple(chains), rules=tuple(numbered))
    return Snapshot(1, out, tuple(out))


def base(name: str, hook: int, priority: int, policy=C.NF_ACCEPT) -> Chain:
    return Chain(name, 1, hook, priority, policy, "filter")


def regular(name: str) -> Chain:
    return Chain(name, 1)
