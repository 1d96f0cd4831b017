"""What a rule requires of a packet: the connection states it accepts (`ct state`,
iptables' `-m conntrack --ctstate` and `-m state`), and its other conditions as bytes.
Pure.

Rules of one component encode one condition in the same bytes, so two rules with the
same other conditions apply to the same packets: Netbird's `iifname "wt0" jump
netbird-rt-fwd` and `iifname "wt0" drop` take the same packets, or neither does.
"""
from __future__ import annotations

from typing import NamedTuple

from ..model import Rule
from ..netlink.consts import (
    CMP_EQ, CMP_NEQ, CT_STATE, CT_STATE_ESTABLISHED, CT_STATE_INVALID, CT_STATE_NEW,
    CT_STATE_RELATED, CT_STATE_UNTRACKED,
)
from ..netlink.exprs import decode_fields, split_expressions
from ..netlink.registers import BYTEORDER

ANY_STATE = CT_STATE_INVALID | CT_STATE_ESTABLISHED | CT_STATE_RELATED | CT_STATE_NEW \
    | CT_STATE_UNTRACKED
ESTABLISHED_OR_RELATED = CT_STATE_ESTABLISHED | CT_STATE_RELATED   # not a first packet

# struct xt_conntrack_mtinfo2/3 (linux/netfilter/xt_conntrack.h): __u16 match_flags,
# invert_flags, state_mask at 146, 148, 150; XT_CONNTRACK_STATE is flag 1. Its state
# bits are nft's but UNTRACKED (1 << 8 there).
_CONNTRACK_FLAGS_AT, XT_CONNTRACK_STATE = 146, 1
_XT_UNTRACKED = 1 << 8
_NOT_CONDITIONS = {"counter", "immediate", "target", "log"}


class Conditions(NamedTuple):
    states: int                 # the connection states it can apply to (ANY_STATE: all)
    others: tuple[bytes, ...]   # every other condition, as its expressions' bytes


def conditions(rule: Rule) -> Conditions | None:
    """The rule's conditions, or None when its expressions do not decode."""
    try:
        parts = split_expressions(rule.expressions_payload)
    except ValueError:
        return None
    states, others = ANY_STATE, []
    state_reg, state_mask = None, ANY_STATE
    for name, raw in parts:
        if name in _NOT_CONDITIONS:
            continue
        try:
            f = decode_fields(name, raw) if name in ("ct", "bitwise", "cmp", "match") else {}
        except ValueError:
            return None
        if name == "ct" and f.get("key") == CT_STATE and "dreg" in f:
            state_reg, state_mask = f["dreg"], ANY_STATE
            continue
        if state_reg is not None and name == "bitwise" and f.get("sreg") == state_reg:
            mask = f.get("mask")
            if isinstance(mask, bytes) and len(mask) == 4:
                state_mask = int.from_bytes(mask, BYTEORDER)
                continue
        if state_reg is not None and name == "cmp" and f.get("sreg") == state_reg:
            data = f.get("data")
            value = int.from_bytes(data, BYTEORDER) if isinstance(data, bytes) else None
            state_reg = None
            if value == 0 and f.get("op") == CMP_NEQ:     # ct state X,Y
                states &= state_mask
                continue
            if value == 0 and f.get("op") == CMP_EQ:      # ct state != X,Y
                states &= ANY_STATE & ~state_mask
                continue
        if name == "match" and f.get("name") == "comment":
            continue
        if name == "match" and f.get("name") in ("conntrack", "state"):
            required = _xt_states(f.get("name"), f.get("rev", 0), f.get("info", b""))
            if required is not None:
                states &= required[0]
                if required[1]:
                    continue
        others.append(name.encode() + b"\0" + raw)
    return Conditions(states, tuple(others))


def _xt_states(name: str, rev: int, info: bytes) -> tuple[int, bool] | None:
    """(the states an xt conntrack/state match admits, whether that is all it tests)."""
    if name == "state" and len(info) >= 4:          # struct xt_state_info { statemask }
        return _from_xt(int.from_bytes(info[:4], BYTEORDER)), True
    if name != "conntrack" or rev not in (2, 3) or len(info) < _CONNTRACK_FLAGS_AT + 6:
        return None
    flags, invert, mask = (int.from_bytes(info[at:at + 2], BYTEORDER)
                           for at in range(_CONNTRACK_FLAGS_AT, _CONNTRACK_FLAGS_AT + 6, 2))
    if not flags & XT_CONNTRACK_STATE:
        return None
    states = _from_xt(mask)
    if invert & XT_CONNTRACK_STATE:
        states = ANY_STATE & ~states
    return states, flags == XT_CONNTRACK_STATE


def _from_xt(mask: int) -> int:
    out = mask & (ANY_STATE & ~CT_STATE_UNTRACKED)
    return out | (CT_STATE_UNTRACKED if mask & _XT_UNTRACKED else 0)
