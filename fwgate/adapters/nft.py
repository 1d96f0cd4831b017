"""nf_tables over netlink: scoped snapshots, generation ids, events, batches."""
from __future__ import annotations

import errno
import gc
import struct
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Container, Iterable, Iterator

from ..config import TableRef
from ..model import Chain, Rule, RulesDigest, Snapshot, Table, rule_digest_parts
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


def _name(raw: bytes, names: dict[bytes, str] = _NAMES) -> str:
    name = names.get(raw)
    if name is None:
        name = as_str(raw)
        if len(names) < 65536:
            names[raw] = name
    return name


def _rule_parts(msg: nfnl.Message, _unpack=_ATTR.unpack_from, _handle=_U64.unpack_from,
                _names=_NAMES) -> tuple:
    """(table, chain, handle, expressions payload, userdata, compat) of a NEWRULE message."""
    table = chain = ""
    handle, blob, userdata, compat = 0, b"", None, None
    buf, pos, end = msg.buf, msg.start, msg.end
    while pos + 4 <= end:
        length, kind = _unpack(buf, pos)
        if length < 4 or pos + length > end:
            raise ValueError(f"malformed netlink attribute at offset {pos}")
        kind &= 0x3FFF  # NLA_TYPE_MASK; numbers are NFTA_RULE_*
        if kind == 4:    # EXPRESSIONS
            blob = buf[pos + 4:pos + length]
        elif kind == 2:  # CHAIN
            raw = buf[pos + 4:pos + length]
            chain = _names.get(raw) or _name(raw)
        elif kind == 1:  # TABLE
            raw = buf[pos + 4:pos + length]
            table = _names.get(raw) or _name(raw)
        elif kind == 3:  # HANDLE
            handle = _handle(buf, pos + 4)[0]
        elif kind == 7:  # USERDATA, raw: Netbird's tags are not TLV comments
            userdata = buf[pos + 4:pos + length]
        elif kind == 5:  # COMPAT
            compat = buf[pos + 4:pos + length]
        pos += (length + 3) & ~3
    return table, chain, handle, blob, userdata, compat


def parse_rule(msg: nfnl.Message, position: int) -> Rule:
    """A rule from its NEWRULE message. Its expressions stay raw bytes until read."""
    table, chain, handle, blob, userdata, compat = _rule_parts(msg)
    return Rule.from_dump(FAMILY_NAMES.get(msg.family, str(msg.family)), table, chain, handle,
                          position, blob, userdata, compat)


# Dump a table's rules chain by chain once it has this many chains. The kernel resumes a
# rule dump by walking the dumped scope from its first rule up to where the last datagram
# ended, so one dump of a whole table costs it O(rules²): 14 s at 100k rules here. Per
# chain (as iptables-nft reads them) that walk stays within a chain, for one more round
# trip per chain; a few chains are dumped whole.
PER_CHAIN_FROM = 8


def _rule_messages(sock: NfSocket, family: int, table: str,
                   chains: list[str] | None) -> Iterator[nfnl.Message]:
    request = attr_str(nfnl.NFTA_RULE_TABLE, table)
    if chains is None or len(chains) < PER_CHAIN_FROM:
        yield from sock.dump_iter(nfnl.GETRULE, family, request)
        return
    for chain in chains:  # the kernel's own chain order: the same rules, in the same order
        yield from sock.dump_iter(nfnl.GETRULE, family,
                                  request + attr_str(nfnl.NFTA_RULE_CHAIN, chain))


def _rules(sock: NfSocket, family: int, table: str, genid: int,
           keep: Container[str] | None = None, chains: list[str] | None = None
           ) -> tuple[tuple[Rule, ...], bytes | None]:
    """The table's rules, and None; or, lean (keep = the chains whose rules to keep),
    those chains' rules and the digest of all the table's rules, taken on the way.
    chains: the table's chains in the kernel's order, to dump them one by one."""
    rules, positions = [], {}
    family_name = FAMILY_NAMES.get(family, str(family))
    digest = RulesDigest() if keep is not None else None
    moved = False
    # Streamed: each datagram is parsed and dropped as it comes, never the whole dump at once.
    for msg in _rule_messages(sock, family, table, chains):
        if msg.res_id != genid & 0xFFFF:
            moved = True  # read on to the end: the socket must be free for the next dump
            continue
        rtable, chain, handle, blob, userdata, compat = _rule_parts(msg)
        pos = positions.get(chain, 0)
        positions[chain] = pos + 1
        if digest is not None:
            digest.add(rule_digest_parts(chain, handle, blob, userdata, compat))
            if chain not in keep:
                continue
        rules.append(Rule.from_dump(family_name, rtable, chain, handle, pos, blob, userdata, compat))
    if moved:
        raise DumpInterrupted()
    return tuple(rules), digest.digest() if digest is not None else None


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
             families: Iterable[str] = (),
             keep_rules: Iterable[tuple[TableRef, str]] | None = None) -> Snapshot:
    """A consistent snapshot of the scoped tables (or of every table of `families`),
    retried while the ruleset moves.

    keep_rules: make it lean. Only the rules of these (table, chain) pairs are kept
    as Rule objects; each table carries the digest of all its rules instead
    (Table.rules_digest), so model.digest() gives what a full snapshot gives, for a
    fraction of the memory. For a daemon that reads a few chains and digests the rest."""
    scope = tuple(scope) if scope is not None else None
    families = sorted(set(families) | {ref.family for ref in scope or ()})
    keep = None
    if keep_rules is not None:
        keep = {}
        for ref, chain in keep_rules:
            keep.setdefault(ref, set()).add(chain)
    with _collector_paused():
        for _ in range(_DUMP_RETRIES):
            try:
                return _snapshot_once(sock, scope, families, keep)
            except DumpInterrupted:
                continue
            except nfnl.NetlinkError as exc:
                if exc.errno != errno.ENOENT:  # a table vanished between two dumps: moved on
                    raise
    raise DumpInterrupted()


@contextmanager
def _collector_paused():
    """Pause Python's cycle collector while a dump is parsed: the tens of thousands of
    objects it makes hold no reference cycles (refcounting frees them all), yet each
    batch of new objects would set off a collection that walks every live one."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _snapshot_once(sock: NfSocket, scope: tuple[TableRef, ...] | None, families: list[str],
                   keep: dict[TableRef, set[str]] | None) -> Snapshot:
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
            ref = TableRef(family_name, name)
            table_chains = tuple(chains.get(name, ()))
            rules, rules_digest = _rules(sock, family, name, genid,
                                         None if keep is None else keep.get(ref, ()),
                                         [c.name for c in table_chains])
            tables[ref] = Table(family_name, name, flags, handle, table_chains,
                                rules, _sets(sock, family, name, genid), rules_digest)
    if sock.genid() != genid:
        raise DumpInterrupted()
    return Snapshot(genid, tables, scope if scope is not None else tuple(tables))
