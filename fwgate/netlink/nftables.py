"""nf_tables object messages: reading rules, chains and events; building tables,
chains and rules (for the Netbird-like programmer and for repairs)."""
from __future__ import annotations

import struct
from dataclasses import dataclass

from ..model import Chain, Rule, TableRef
from .attrs import NLATTR, as_i32, as_str, as_u32, as_u64, attr, attr_str, attr_u32, attr_u64, \
    attrs, nested
from .consts import (
    DELRULE, DELTABLE, FAMILY_NAMES, MSG_NAMES, NEWCHAIN, NEWGEN, NEWRULE, NEWTABLE,
    NFNL_SUBSYS_NFTABLES, NFTA_CHAIN_HANDLE, NFTA_CHAIN_HOOK, NFTA_CHAIN_NAME, NFTA_CHAIN_POLICY,
    NFTA_CHAIN_TABLE, NFTA_CHAIN_TYPE, NFTA_GEN_ID, NFTA_GEN_PROC_PID, NFTA_HOOK_HOOKNUM,
    NFTA_HOOK_PRIORITY, NFTA_RULE_CHAIN, NFTA_RULE_COMPAT, NFTA_RULE_COMPAT_FLAGS,
    NFTA_RULE_COMPAT_PROTO, NFTA_RULE_EXPRESSIONS, NFTA_RULE_HANDLE, NFTA_RULE_POSITION,
    NFTA_RULE_TABLE, NFTA_RULE_USERDATA, NFTA_TABLE_NAME, NLA_TYPE_MASK, NLM_F_APPEND,
    NLM_F_CREATE,
)
from .messages import Message, Msg

_U64 = struct.Struct(">Q")
_NAMES: dict[bytes, str] = {}  # table and chain names as sent → str; few, and repeated per rule


def _name(raw: bytes) -> str:
    name = _NAMES.get(raw)
    if name is None:
        name = as_str(raw)
        if len(_NAMES) < 65536:
            _NAMES[raw] = name
    return name


def family_name(number: int) -> str:
    return FAMILY_NAMES.get(number, str(number))


# --- reading ------------------------------------------------------------------

def rule_parts(msg: Message, _unpack=NLATTR.unpack_from, _handle=_U64.unpack_from,
               _mask=NLA_TYPE_MASK, _exprs=NFTA_RULE_EXPRESSIONS, _chain=NFTA_RULE_CHAIN,
               _table=NFTA_RULE_TABLE, _handle_attr=NFTA_RULE_HANDLE,
               _userdata=NFTA_RULE_USERDATA, _compat=NFTA_RULE_COMPAT) -> tuple:
    """(table, chain, handle, expressions payload, userdata, compat) of a NEWRULE message.

    The attribute walk inlined, the attribute numbers bound as locals: a dump of 100k
    rules comes through here."""
    table = chain = ""
    handle, blob, userdata, compat = 0, b"", None, None
    buf, pos, end, names = msg.buf, msg.start, msg.end, _NAMES
    while pos + 4 <= end:
        length, kind = _unpack(buf, pos)
        if length < 4 or pos + length > end:
            raise ValueError(f"malformed netlink attribute at offset {pos}")
        kind &= _mask
        if kind == _exprs:
            blob = buf[pos + 4:pos + length]
        elif kind == _chain:
            raw = buf[pos + 4:pos + length]
            chain = names.get(raw) or _name(raw)
        elif kind == _table:
            raw = buf[pos + 4:pos + length]
            table = names.get(raw) or _name(raw)
        elif kind == _handle_attr:
            handle = _handle(buf, pos + 4)[0]
        elif kind == _userdata:  # raw: Netbird's tags are not TLV comments
            userdata = buf[pos + 4:pos + length]
        elif kind == _compat:
            compat = buf[pos + 4:pos + length]
        pos += (length + 3) & ~3
    if 0 < end - pos:
        raise ValueError(f"{end - pos} stray bytes after the last netlink attribute")
    return table, chain, handle, blob, userdata, compat


def parse_rule(msg: Message, position: int) -> Rule:
    """A rule from its NEWRULE message. Its expressions stay raw bytes until read."""
    table, chain, handle, blob, userdata, compat = rule_parts(msg)
    return Rule.from_dump(family_name(msg.family), table, chain, handle, position, blob,
                          userdata, compat)


def parse_chain(msg: Message) -> tuple[str, Chain]:
    """(table name, Chain) of a NEWCHAIN message."""
    a = msg.attrs()
    hook = prio = None
    if NFTA_CHAIN_HOOK in a:
        h = attrs(a[NFTA_CHAIN_HOOK])
        hook = as_u32(h[NFTA_HOOK_HOOKNUM]) if NFTA_HOOK_HOOKNUM in h else None
        prio = as_i32(h[NFTA_HOOK_PRIORITY]) if NFTA_HOOK_PRIORITY in h else None
    return as_str(a[NFTA_CHAIN_TABLE]), Chain(
        name=as_str(a[NFTA_CHAIN_NAME]),
        handle=as_u64(a[NFTA_CHAIN_HANDLE]) if NFTA_CHAIN_HANDLE in a else 0,
        hook=hook, priority=prio,
        policy=as_u32(a[NFTA_CHAIN_POLICY]) if NFTA_CHAIN_POLICY in a else None,
        type=as_str(a[NFTA_CHAIN_TYPE]) if NFTA_CHAIN_TYPE in a else None)


@dataclass(frozen=True)
class Event:
    """One nf_tables notification: a change to a table's objects, or the end of a
    transaction (NEWGEN, with the generation it produced)."""

    kind: str                   # "NEWRULE", "DELTABLE", ... or "NEWGEN"
    table: TableRef | None      # None for NEWGEN
    genid: int | None = None    # NEWGEN only
    portid: int = 0             # netlink port of the socket whose transaction this is
    pid: int | None = None      # NEWGEN only: the process that committed it
    rule: Rule | None = None    # NEWRULE, DELRULE: the rule added or deleted (position: -1)


def decode_events(messages: list[Message]) -> list[Event]:
    out = []
    for msg in messages:
        if msg.subsys != NFNL_SUBSYS_NFTABLES:
            continue
        kind = MSG_NAMES.get(msg.cmd, f"MSG{msg.cmd}")
        if msg.cmd == NEWGEN:
            try:
                found = msg.attrs()
            except ValueError:
                found = {}
            out.append(Event(kind, None,
                             as_u32(found[NFTA_GEN_ID]) if NFTA_GEN_ID in found else None,
                             msg.portid,
                             as_u32(found[NFTA_GEN_PROC_PID]) if NFTA_GEN_PROC_PID in found
                             else None))
            continue
        family = family_name(msg.family)
        if msg.cmd in (NEWRULE, DELRULE):
            try:
                rule = parse_rule(msg, -1)
            except ValueError:
                rule = None
            out.append(Event(kind, TableRef(family, rule.table if rule else ""), None,
                             msg.portid, None, rule))
            continue
        # Every object message names its table in attribute 1.
        try:
            first = next(((s, e) for k, s, e in msg.iter_attrs() if k == 1), None)
        except ValueError:
            first = None
        name = as_str(msg.buf[first[0]:first[1]]) if first else ""
        out.append(Event(kind, TableRef(family, name), None, msg.portid))
    return out


# --- building -----------------------------------------------------------------

def table_msg(family: int, name: str) -> Msg:
    return NEWTABLE, family, NLM_F_CREATE, attr_str(NFTA_TABLE_NAME, name)


def del_table_msg(family: int, name: str) -> Msg:
    return DELTABLE, family, 0, attr_str(NFTA_TABLE_NAME, name)


def chain_msg(family: int, table: str, name: str, hook: int | None = None,
              priority: int = 0, kind: str = "filter", policy: int = 1) -> Msg:
    """A NEWCHAIN: a regular chain, or a base chain on `hook` (policy accept by default)."""
    parts = [attr_str(NFTA_CHAIN_TABLE, table), attr_str(NFTA_CHAIN_NAME, name)]
    if hook is not None:
        parts += [nested(NFTA_CHAIN_HOOK, attr_u32(NFTA_HOOK_HOOKNUM, hook),
                         attr_u32(NFTA_HOOK_PRIORITY, priority)),
                  attr_u32(NFTA_CHAIN_POLICY, policy),
                  attr_str(NFTA_CHAIN_TYPE, kind)]
    return NEWCHAIN, family, NLM_F_CREATE, b"".join(parts)


def rule_msg(family: int, table: str, chain: str, expressions: list[bytes] | tuple[bytes, ...],
             userdata: bytes | None = None, append: bool = True, position: int | None = None,
             xt_compat: bool = False) -> Msg:
    """A NEWRULE: appended, or (append=False) inserted at the top / before `position`.
    xt_compat: send NFTA_RULE_COMPAT (proto 0, no flags) as iptables does with xt matches."""
    parts = [attr_str(NFTA_RULE_TABLE, table), attr_str(NFTA_RULE_CHAIN, chain),
             nested(NFTA_RULE_EXPRESSIONS, *expressions)]
    if xt_compat:
        parts.append(nested(NFTA_RULE_COMPAT, attr_u32(NFTA_RULE_COMPAT_PROTO, 0),
                            attr_u32(NFTA_RULE_COMPAT_FLAGS, 0)))
    if position is not None:
        parts.append(attr_u64(NFTA_RULE_POSITION, position))
    if userdata is not None:
        parts.append(attr(NFTA_RULE_USERDATA, userdata))
    return NEWRULE, family, NLM_F_CREATE | (NLM_F_APPEND if append else 0), b"".join(parts)


def del_rule_msg(family: int, table: str, chain: str, handle: int) -> Msg:
    return DELRULE, family, 0, (attr_str(NFTA_RULE_TABLE, table) +
                                attr_str(NFTA_RULE_CHAIN, chain) +
                                attr_u64(NFTA_RULE_HANDLE, handle))
