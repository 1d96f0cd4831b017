"""nf_tables over netlink: scoped snapshots, generation ids, events, batches."""
from __future__ import annotations

import errno
import struct
from dataclasses import dataclass
from typing import Iterable

from ..config import TableRef
from ..model import Chain, Rule, Snapshot, Table
from . import nfnl
from .nfnl import (
    FAMILIES, FAMILY_NAMES, DumpInterrupted, NfSocket, as_i32, as_str, as_u32, as_u64,
    attr_str, iter_attrs,
)

_DUMP_RETRIES = 20
_U64 = struct.Struct(">Q")
_ATTR = struct.Struct("=HH")

# NFTA_SET_ELEM_*: expiration counts down and element expressions hold counters.
_SET_ELEM_VOLATILE = {5, 7, 11}
_SET_HANDLE = 16


@dataclass(frozen=True)
class Event:
    """One nf_tables notification: a change to a table's objects, or a new generation."""

    kind: str                   # "NEWRULE", "DELTABLE", ... or "NEWGEN"
    table: TableRef | None      # None for NEWGEN
    genid: int | None = None    # NEWGEN only


def decode_events(messages: Iterable[nfnl.Message]) -> list[Event]:
    out = []
    for msg in messages:
        if msg.subsys != nfnl.NFNL_SUBSYS_NFTABLES:
            continue
        kind = nfnl.MSG_NAMES.get(msg.cmd, f"MSG{msg.cmd}")
        try:
            found = msg.attrs()
        except ValueError:
            found = {}
        if msg.cmd == nfnl.NEWGEN:
            genid = as_u32(found[nfnl.NFTA_GEN_ID]) if nfnl.NFTA_GEN_ID in found else None
            out.append(Event(kind, None, genid))
            continue
        # Every object message names its table in attribute 1.
        family = FAMILY_NAMES.get(msg.family, str(msg.family))
        name = as_str(found[1]) if 1 in found else ""
        out.append(Event(kind, TableRef(family, name)))
    return out


def _check_gen(msg: nfnl.Message, genid: int) -> None:
    # Each dump message carries the generation it was taken at (low 16 bits).
    if msg.res_id != genid & 0xFFFF:
        raise DumpInterrupted()


def _chains(sock: NfSocket, family: int, genid: int) -> dict[str, list[Chain]]:
    by_table: dict[str, list[Chain]] = {}
    for msg in sock.dump(nfnl.GETCHAIN, family):
        _check_gen(msg, genid)
        a = msg.attrs()
        hook = prio = None
        if nfnl.NFTA_CHAIN_HOOK in a:
            h = nfnl.attrs(a[nfnl.NFTA_CHAIN_HOOK])
            hook = as_u32(h[nfnl.NFTA_HOOK_HOOKNUM]) if nfnl.NFTA_HOOK_HOOKNUM in h else None
            prio = as_i32(h[nfnl.NFTA_HOOK_PRIORITY]) if nfnl.NFTA_HOOK_PRIORITY in h else None
        chain = Chain(
            name=as_str(a[nfnl.NFTA_CHAIN_NAME]),
            handle=as_u64(a[nfnl.NFTA_CHAIN_HANDLE]) if nfnl.NFTA_CHAIN_HANDLE in a else 0,
            hook=hook, priority=prio,
            policy=as_u32(a[nfnl.NFTA_CHAIN_POLICY]) if nfnl.NFTA_CHAIN_POLICY in a else None,
            type=as_str(a[nfnl.NFTA_CHAIN_TYPE]) if nfnl.NFTA_CHAIN_TYPE in a else None)
        by_table.setdefault(as_str(a[nfnl.NFTA_CHAIN_TABLE]), []).append(chain)
    return by_table


_NAMES: dict[bytes, str] = {}  # table and chain names as sent → str; few, and repeated per rule


def _name(raw: bytes) -> str:
    name = _NAMES.get(raw)
    if name is None:
        name = as_str(raw)
        if len(_NAMES) < 65536:
            _NAMES[raw] = name
    return name


def _rule_parts(msg: nfnl.Message) -> tuple:
    """(table, chain, handle, expressions payload, userdata, compat) of a NEWRULE message."""
    table = chain = ""
    handle, blob, userdata, compat = 0, b"", None, None
    buf, pos, end = msg.buf, msg.start, msg.end
    unpack = _ATTR.unpack_from
    while pos + 4 <= end:
        length, kind = unpack(buf, pos)
        if length < 4 or pos + length > end:
            raise ValueError(f"malformed netlink attribute at offset {pos}")
        kind &= nfnl.NLA_TYPE_MASK
        start, stop = pos + 4, pos + length
        if kind == nfnl.NFTA_RULE_EXPRESSIONS:
            blob = buf[start:stop]
        elif kind == nfnl.NFTA_RULE_CHAIN:
            chain = _name(buf[start:stop])
        elif kind == nfnl.NFTA_RULE_TABLE:
            table = _name(buf[start:stop])
        elif kind == nfnl.NFTA_RULE_HANDLE:
            handle = _U64.unpack_from(buf, start)[0]
        elif kind == nfnl.NFTA_RULE_USERDATA:
            userdata = buf[start:stop]  # raw: Netbird's tags are not TLV comments
        elif kind == nfnl.NFTA_RULE_COMPAT:
            compat = buf[start:stop]
        pos += (length + 3) & ~3
    return table, chain, handle, blob, userdata, compat


def parse_rule(msg: nfnl.Message, position: int) -> Rule:
    """A rule from its NEWRULE message. Its expressions stay raw bytes until read."""
    table, chain, handle, blob, userdata, compat = _rule_parts(msg)
    return Rule.from_dump(FAMILY_NAMES.get(msg.family, str(msg.family)), table, chain, handle,
                          position, blob, userdata, compat)


def _rules(sock: NfSocket, family: int, table: str, genid: int) -> tuple[Rule, ...]:
    rules, positions = [], {}
    family_name = FAMILY_NAMES.get(family, str(family))
    moved = False
    # Streamed: each datagram is parsed and dropped as it comes, never the whole dump at once.
    for msg in sock.dump_iter(nfnl.GETRULE, family, attr_str(nfnl.NFTA_RULE_TABLE, table)):
        if msg.res_id != genid & 0xFFFF:
            moved = True  # read on to the end: the socket must be free for the next dump
            continue
        rtable, chain, handle, blob, userdata, compat = _rule_parts(msg)
        pos = positions.get(chain, 0)
        positions[chain] = pos + 1
        rules.append(Rule.from_dump(family_name, rtable, chain, handle, pos, blob, userdata, compat))
    if moved:
        raise DumpInterrupted()
    return tuple(rules)


def _sets(sock: NfSocket, family: int, table: str, genid: int) -> tuple[tuple[str, bytes], ...]:
    out = []
    for msg in sock.dump(nfnl.GETSET, family, attr_str(nfnl.NFTA_SET_TABLE, table)):
        _check_gen(msg, genid)
        a = msg.attrs()
        name = as_str(a[nfnl.NFTA_SET_NAME])
        definition = b"".join(msg.buf[s - 4:e] for k, s, e in msg.iter_attrs() if k != _SET_HANDLE)
        elements = []
        request = attr_str(nfnl.NFTA_SET_ELEM_LIST_TABLE, table) + \
            attr_str(nfnl.NFTA_SET_ELEM_LIST_SET, name)
        for emsg in sock.dump(nfnl.GETSETELEM, family, request):
            _check_gen(emsg, genid)
            for kind, s, e in emsg.iter_attrs():
                if kind != nfnl.NFTA_SET_ELEM_LIST_ELEMENTS:
                    continue
                for _, es, ee in iter_attrs(emsg.buf, s, e):
                    elements.append(b"".join(emsg.buf[x - 4:y] for k, x, y in
                                             iter_attrs(emsg.buf, es, ee)
                                             if k not in _SET_ELEM_VOLATILE))
        # Hash sets dump in bucket order, which can change without a change.
        out.append((name, bytes(definition) + b"".join(sorted(elements))))
    return tuple(out)


def snapshot(sock: NfSocket, scope: Iterable[TableRef] | None = None,
             families: Iterable[str] = ()) -> Snapshot:
    """A consistent snapshot of the scoped tables (or of every table of `families`),
    retried while the ruleset moves."""
    scope = tuple(scope) if scope is not None else None
    families = sorted(set(families) | {ref.family for ref in scope or ()})
    for _ in range(_DUMP_RETRIES):
        try:
            return _snapshot_once(sock, scope, families)
        except DumpInterrupted:
            continue
        except nfnl.NetlinkError as exc:
            if exc.errno != errno.ENOENT:  # a table vanished between two dumps: moved on
                raise
    raise DumpInterrupted()


def _snapshot_once(sock: NfSocket, scope: tuple[TableRef, ...] | None,
                   families: list[str]) -> Snapshot:
    genid = sock.genid()
    tables: dict[TableRef, Table] = {}
    for family_name in families:
        family = FAMILIES[family_name]
        wanted = None if scope is None else {ref.name for ref in scope if ref.family == family_name}
        present = {}
        for msg in sock.dump(nfnl.GETTABLE, family):
            _check_gen(msg, genid)
            a = msg.attrs()
            name = as_str(a[nfnl.NFTA_TABLE_NAME])
            if wanted is None or name in wanted:
                present[name] = (
                    as_u32(a[nfnl.NFTA_TABLE_FLAGS]) if nfnl.NFTA_TABLE_FLAGS in a else 0,
                    as_u64(a[nfnl.NFTA_TABLE_HANDLE]) if nfnl.NFTA_TABLE_HANDLE in a else 0)
        if not present:
            continue
        chains = _chains(sock, family, genid)
        for name, (flags, handle) in present.items():
            tables[TableRef(family_name, name)] = Table(
                family_name, name, flags, handle, tuple(chains.get(name, ())),
                _rules(sock, family, name, genid), _sets(sock, family, name, genid))
    if sock.genid() != genid:
        raise DumpInterrupted()
    return Snapshot(genid, tables, scope if scope is not None else tuple(tables))
