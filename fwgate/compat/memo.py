"""Verdicts remembered by the rule's shape: what the parser model (parser.py) looks at
of a rule, read from the kernel's bytes without decoding most expressions. Pure."""
from __future__ import annotations

from ..model import Rule
from ..netlink import consts as C
from ..netlink.attrs import attr_str
from ..netlink.exprs import decode_fields, element_bounds, split_expressions
from ..netlink.registers import BYTEORDER
from .parser import RuleVerdict, read_rule
from .profiles import Profile

# --- memoised verdicts ----------------------------------------------------------------
#
# The reader looks at registers, operators, keys, offsets, lengths, the first bytes of
# small constants and the names of verdicts, never at addresses, ports, comments, set
# names or jump targets. A shape keeps exactly what it looks at, so rules of one shape
# get one verdict. An element's shape is found from its bytes (kept in a bounded
# cache: most elements repeat); xt match/target elements, whose info (a comment, a
# port list) makes them unique, are told apart by their name attribute alone.

_IGNORED_FIELDS = {"info", "set", "set_id", "prefix", "imm_name", "set_name", "rev"}
_MATCH_HEAD = attr_str(C.NFTA_EXPR_NAME, "match")
_TARGET_HEAD = attr_str(C.NFTA_EXPR_NAME, "target")
_HEAD_LEN = len(_MATCH_HEAD)
_SHAPES: dict[bytes, int] = {}        # element bytes -> shape id
_SHAPE_IDS: dict[object, int] = {}     # shape -> its id (a few hundred)
_SHAPES_MAX = 65536
_MEMO: dict[tuple, list] = {}
_MEMO_MAX = 32768


def _bytes_shape(key: str, v: bytes):
    # Small masks are compared whole (`-f` is frag-off & 0x1fff); of any other constant
    # the reader reads its length, its first byte (a protocol, a ttl, an ICMP type, an
    # ARP length) and whether its first word is zero (nftrace, `-f`'s 0).
    if key == "mask" and len(v) <= 2:
        return v
    return len(v), v[:1], any(v[:4])


def _shape_of(name: str, fields: dict) -> tuple:
    """What the reader reads of one expression."""
    if name == "counter":
        return ("counter",)
    out: list = [name]
    for k, v in fields.items():
        if k in _IGNORED_FIELDS:
            continue
        if isinstance(v, bytes):
            v = _bytes_shape(k, v)
        elif isinstance(v, tuple):
            v = v[0]            # (verdict, chain): the chain is never read
        elif isinstance(v, str) and k != "name":
            continue
        out.append((k, v))
    return tuple(out)


def _attr_head(length: int, kind: int) -> bytes:
    return length.to_bytes(2, BYTEORDER) + kind.to_bytes(2, BYTEORDER)


# cmp and verdict immediates are the elements that rarely repeat (addresses, ports, jump
# targets): their shape is read at fixed offsets of the kernel's layout, checked
# attribute by attribute, without decoding (tests/unit/test_compat_speed.py holds both
# ways to the same answers). Anything laid out otherwise is decoded.
_CMP_NAME = attr_str(C.NFTA_EXPR_NAME, "cmp")
_CMP_SREG, _CMP_OP = _attr_head(8, 1), _attr_head(8, 2)
_IMM_NAME = attr_str(C.NFTA_EXPR_NAME, "immediate")
_IMM_DREG, _VERDICT_CODE = _attr_head(8, 1), _attr_head(8, C.NFTA_VERDICT_CODE)


def _type_at(element: bytes, at: int) -> int:
    return int.from_bytes(element[at:at + 2], BYTEORDER) & C.NLA_TYPE_MASK


def _fast_shape(element: bytes) -> tuple | None:
    if element[4:4 + len(_CMP_NAME)] == _CMP_NAME and len(element) >= 40 \
            and element[16:20] == _CMP_SREG and element[24:28] == _CMP_OP \
            and _type_at(element, 34) == 3 and _type_at(element, 38) == C.NFTA_DATA_VALUE:
        vlen = int.from_bytes(element[36:38], BYTEORDER) - 4
        value = element[40:40 + vlen]
        if vlen < 0 or len(value) != vlen or \
                int.from_bytes(element[32:34], BYTEORDER) != ((vlen + 3) & ~3) + 8:
            return None
        return ("cmp", ("sreg", int.from_bytes(element[20:24], "big")),
                ("op", int.from_bytes(element[28:32], "big")), ("data", _bytes_shape("data", value)))
    if element[4:4 + len(_IMM_NAME)] == _IMM_NAME and len(element) >= 48 \
            and element[24:28] == _IMM_DREG and _type_at(element, 34) == 2 \
            and _type_at(element, 38) == C.NFTA_DATA_VERDICT and element[40:44] == _VERDICT_CODE:
        code = int.from_bytes(element[44:48], "big", signed=True)
        return ("immediate", ("dreg", int.from_bytes(element[28:32], "big")),
                ("data", C.VERDICTS.get(code, str(code))))
    return None


def _element_shape(element: bytes) -> object:
    try:
        (name, data), = split_expressions(element)
        return _shape_of(name, decode_fields(name, data))
    except ValueError:
        return ("unreadable", element)


def shape_key(rule: Rule) -> tuple | None:
    """The rule's shape, from the kernel's bytes; None when they do not parse."""
    blob = rule.expressions_payload
    bounds = element_bounds(blob)
    if bounds is None:
        return None
    shapes, out = _SHAPES, []
    bridge = rule.family == "bridge"
    for start, end in bounds:
        head = blob[start + 4:start + 4 + _HEAD_LEN]
        if head == _MATCH_HEAD:
            out.append(-1)
        elif head == _TARGET_HEAD and not bridge:  # ebtables tells log/nflog apart
            out.append(-2)
        else:
            element = blob[start:end]
            shape = shapes.get(element)
            if shape is None:  # shapes are numbered: a rule's key hashes fast
                shape = _SHAPE_IDS.setdefault(_fast_shape(element) or _element_shape(element),
                                              len(_SHAPE_IDS))
                if len(shapes) < _SHAPES_MAX:
                    shapes[element] = shape
            out.append(shape)
    return tuple(out)


# chains whose name makes iptables-restore refuse -o (1) or -i (2): part of a verdict
_DIRECTION = {"PREROUTING": 1, "INPUT": 1, "OUTPUT": 2, "POSTROUTING": 2}
# tables read differently: ebtables' broute, nat (DROP refused on restore)
_TABLE_KIND = {"broute": 1, "nat": 2}


def verdicts(rule: Rule, profiles: tuple[Profile, ...], sets: dict[str, int] | None = None
             ) -> tuple[RuleVerdict, ...]:
    """read_rule() for each profile, memoised by the rule's shape; () when every one
    reads it cleanly (the common case, answered by one lookup)."""
    if sets is not None and rule.family == "bridge" and b"lookup" in rule.expressions_payload:
        return _unless_clean(tuple(read_rule(rule, p, sets) for p in profiles))
    key = shape_key(rule)
    if key is None:
        return _unless_clean(tuple(read_rule(rule, p, sets) for p in profiles))
    where = (rule.family, _TABLE_KIND.get(rule.table, 0), _DIRECTION.get(rule.chain, 0), key)
    slots = _MEMO.get(where)
    if slots is None:
        if len(_MEMO) >= _MEMO_MAX:
            _MEMO.clear()
            if len(_SHAPE_IDS) >= _SHAPES_MAX:  # ids live as long as the keys holding them
                _SHAPE_IDS.clear()
                _SHAPES.clear()
        slots = _MEMO[where] = {}
    found = slots.get(profiles)
    if found is None:
        read = tuple(read_rule(rule, p) for p in profiles)
        found = _unless_clean(read)
        if not any(v.values for v in read):
            slots[profiles] = found
    return found


def _unless_clean(vs: tuple[RuleVerdict, ...]) -> tuple[RuleVerdict, ...]:
    return () if all(v.clean for v in vs) else vs
