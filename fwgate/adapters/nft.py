"""nf_tables over netlink: consistent scoped snapshots of the kernel's tables."""
from __future__ import annotations

import errno
import gc
from contextlib import contextmanager
from typing import Container, Iterable, Iterator

from ..model import Rule, RulesDigest, Snapshot, Table, TableRef, rule_digest_parts
from ..netlink.attrs import as_str, as_u32, as_u64, attr_str, iter_attrs
from ..netlink.consts import (
    FAMILIES, FAMILY_NAMES, GETCHAIN, GETRULE, GETSET, GETSETELEM, GETTABLE, NFTA_RULE_CHAIN,
    NFTA_RULE_TABLE, NFTA_SET_ELEM_EXPIRATION, NFTA_SET_ELEM_EXPR, NFTA_SET_ELEM_EXPRESSIONS,
    NFTA_SET_ELEM_LIST_ELEMENTS, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_TABLE,
    NFTA_SET_HANDLE, NFTA_SET_NAME, NFTA_SET_TABLE, NFTA_TABLE_FLAGS,
    NFTA_TABLE_HANDLE, NFTA_TABLE_NAME,
)
from ..netlink.messages import Message
from ..netlink.nftables import parse_chain, rule_parts
from .nfsock import DumpInterrupted, NetlinkError, NfSocket

_DUMP_RETRIES = 20
# Set elements: expiration counts down and element expressions hold counters.
_SET_ELEM_VOLATILE = {NFTA_SET_ELEM_EXPIRATION, NFTA_SET_ELEM_EXPR, NFTA_SET_ELEM_EXPRESSIONS}


def _check_gen(msg: Message, genid: int) -> None:
    # Each dump message carries the generation it was taken at (low 16 bits).
    if msg.res_id != genid & 0xFFFF:
        raise DumpInterrupted()


def _chains(sock: NfSocket, family: int, genid: int) -> dict[str, list]:
    by_table: dict[str, list] = {}
    for msg in sock.dump(GETCHAIN, family):
        _check_gen(msg, genid)
        table, chain = parse_chain(msg)
        by_table.setdefault(table, []).append(chain)
    return by_table


# Dump a table's rules chain by chain once it has this many chains. The kernel resumes a
# rule dump by walking the dumped scope from its first rule up to where the last datagram
# ended, so one dump of a whole table costs it O(rules²): 14 s at 100k rules here. Per
# chain (as iptables-nft reads them) that walk stays within a chain, for one more round
# trip per chain; a few chains are dumped whole.
PER_CHAIN_FROM = 8


def _rule_messages(sock: NfSocket, family: int, table: str,
                   chains: list[str] | None) -> Iterator[Message]:
    request = attr_str(NFTA_RULE_TABLE, table)
    if chains is None or len(chains) < PER_CHAIN_FROM:
        yield from sock.dump_iter(GETRULE, family, request)
        return
    for chain in chains:  # the kernel's own chain order: the same rules, in the same order
        yield from sock.dump_iter(GETRULE, family,
                                  request + attr_str(NFTA_RULE_CHAIN, chain))


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
        rtable, chain, handle, blob, userdata, compat = rule_parts(msg)
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
    for msg in sock.dump(GETSET, family, attr_str(NFTA_SET_TABLE, table)):
        _check_gen(msg, genid)
        a = msg.attrs()
        name = as_str(a[NFTA_SET_NAME])
        definition = b"".join(msg.buf[s - 4:e] for k, s, e in msg.iter_attrs() if k != NFTA_SET_HANDLE)
        elements = []
        request = attr_str(NFTA_SET_ELEM_LIST_TABLE, table) + \
            attr_str(NFTA_SET_ELEM_LIST_SET, name)
        for emsg in sock.dump(GETSETELEM, family, request):
            _check_gen(emsg, genid)
            for kind, s, e in emsg.iter_attrs():
                if kind != NFTA_SET_ELEM_LIST_ELEMENTS:
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
            except NetlinkError as exc:
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
        for msg in sock.dump(GETTABLE, family):
            _check_gen(msg, genid)
            a = msg.attrs()
            name = as_str(a[NFTA_TABLE_NAME])
            if wanted is None or name in wanted:
                present[name] = (
                    as_u32(a[NFTA_TABLE_FLAGS]) if NFTA_TABLE_FLAGS in a else 0,
                    as_u64(a[NFTA_TABLE_HANDLE]) if NFTA_TABLE_HANDLE in a else 0)
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
