"""Rules built by hand the way the kernel holds them, for the reader's unit tests."""
from __future__ import annotations

import struct

from fwgate.model import Expr, Rule, Snapshot, Table, TableRef
from fwgate.netlink import consts as C
from fwgate.netlink import exprs as X
from fwgate.netlink.exprs import split_expressions

ZERO = b"\0\0\0\0"
EST_REL = struct.pack("=I", 6)


def rule(*exprs: bytes | Expr, family="ip", table="filter", chain="FORWARD", handle=1,
         position=0, userdata=None) -> Rule:
    parsed = []
    for e in exprs:
        parsed += [e] if isinstance(e, Expr) else [Expr(n, r) for n, r in split_expressions(e)]
    return Rule(family, table, chain, handle, position, tuple(parsed), userdata)


def snap(*rules: Rule, extra_tables=()) -> Snapshot:
    tables = {}
    for r in rules:
        ref = TableRef(r.family, r.table)
        old = tables.get(ref, Table(r.family, r.table))
        tables[ref] = Table(r.family, r.table, rules=old.rules + (r,))
    for ref in extra_tables:
        tables.setdefault(ref, Table(ref.family, ref.name))
    return Snapshot(1, tables, tuple(tables))


def raw(name: str, *attrs: bytes) -> Expr:
    return Expr(name, b"".join(attrs))


def oifname(reg=1, padded=True):
    return [X.meta_load(C.META_OIFNAME, reg), X.cmp(C.CMP_EQ, X.ifname_bytes("wt0", padded), reg)]


def ct_state(reg):
    return [X.ct_load(C.CT_STATE, reg), X.bitwise(reg, reg, EST_REL, ZERO),
            X.cmp(C.CMP_NEQ, ZERO, reg)]


def payload_cmp(base, offset, length, data, op=C.CMP_EQ, reg=1):
    return [X.payload_load(base, offset, length, reg), X.cmp(op, data, reg)]


def l4proto(proto):
    return [X.meta_load(16), X.cmp(C.CMP_EQ, bytes([proto]))]


ACCEPT = [X.counter(), X.verdict(C.NF_ACCEPT)]
