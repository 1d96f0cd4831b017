"""nf_tables expressions: decoding their attributes, and building the few we write.

Pure: bytes in, values out. Attribute numbers are the kernel's
(include/uapi/linux/netfilter/nf_tables.h)."""
from __future__ import annotations

import struct

from .attrs import NLATTR, as_str, attr, attr_str, attr_u32, iter_attrs, nested
from .consts import (
    IFNAMSIZ, NFTA_DATA_VALUE, NFTA_DATA_VERDICT, NFTA_EXPR_DATA, NFTA_EXPR_NAME, NFTA_LIST_ELEM,
    NFTA_VERDICT_CHAIN, NFTA_VERDICT_CODE, NLA_TYPE_MASK, REG_VERDICT, VERDICT_CODES, VERDICTS,
)

# Per expression: attribute number -> (field, kind). Kinds: u8/u16/u32/u64 (big
# endian), i32, str, data (nested NFTA_DATA_*), raw. Unknown ones stay raw.
_U32, _STR, _DATA = "u32", "str", "data"
SCHEMA: dict[str, dict[int, tuple[str, str]]] = {
    "meta": {1: ("dreg", _U32), 2: ("key", _U32), 3: ("sreg", _U32)},
    "cmp": {1: ("sreg", _U32), 2: ("op", _U32), 3: ("data", _DATA)},
    "ct": {1: ("dreg", _U32), 2: ("key", _U32), 3: ("direction", "u8"), 4: ("sreg", _U32)},
    "bitwise": {1: ("sreg", _U32), 2: ("dreg", _U32), 3: ("len", _U32), 4: ("mask", _DATA),
                5: ("xor", _DATA), 6: ("op", _U32), 7: ("data", _DATA)},
    "payload": {1: ("dreg", _U32), 2: ("base", _U32), 3: ("offset", _U32), 4: ("len", _U32),
                5: ("sreg", _U32), 6: ("csum_type", _U32), 7: ("csum_offset", _U32),
                8: ("csum_flags", _U32)},
    "immediate": {1: ("dreg", _U32), 2: ("data", _DATA)},
    "counter": {1: ("bytes", "u64"), 2: ("packets", "u64")},
    "lookup": {1: ("set", _STR), 2: ("sreg", _U32), 3: ("dreg", _U32), 4: ("set_id", _U32),
               5: ("flags", _U32)},
    "match": {1: ("name", _STR), 2: ("rev", _U32), 3: ("info", "raw")},
    "target": {1: ("name", _STR), 2: ("rev", _U32), 3: ("info", "raw")},
    "range": {1: ("sreg", _U32), 2: ("op", _U32), 3: ("from", _DATA), 4: ("to", _DATA)},
    "fib": {1: ("dreg", _U32), 2: ("result", _U32), 3: ("flags", _U32)},
    "rt": {1: ("dreg", _U32), 2: ("key", _U32)},
    "socket": {1: ("key", _U32), 2: ("dreg", _U32), 3: ("level", _U32)},
    "osf": {1: ("dreg", _U32), 2: ("ttl", "u8"), 3: ("flags", _U32)},
    "exthdr": {1: ("dreg", _U32), 2: ("type", "u8"), 3: ("offset", _U32), 4: ("len", _U32),
               5: ("flags", _U32), 6: ("op", _U32), 7: ("sreg", _U32)},
    "log": {1: ("group", "u16"), 2: ("prefix", _STR), 3: ("snaplen", _U32),
            4: ("qthreshold", "u16"), 5: ("level", _U32), 6: ("flags", _U32)},
    "limit": {1: ("rate", "u64"), 2: ("unit", "u64"), 3: ("burst", _U32), 4: ("type", _U32),
              5: ("flags", _U32)},
    "nat": {1: ("type", _U32), 2: ("family", _U32), 3: ("sreg_addr_min", _U32),
            4: ("sreg_addr_max", _U32), 5: ("sreg_proto_min", _U32),
            6: ("sreg_proto_max", _U32), 7: ("flags", _U32)},
    "masq": {1: ("flags", _U32), 2: ("sreg_proto_min", _U32), 3: ("sreg_proto_max", _U32)},
    "redir": {1: ("sreg_proto_min", _U32), 2: ("sreg_proto_max", _U32), 3: ("flags", _U32)},
    "reject": {1: ("type", _U32), 2: ("icmp_code", "u8")},
    "dynset": {1: ("set", _STR), 2: ("set_id", _U32), 3: ("op", _U32), 4: ("sreg_key", _U32),
               5: ("sreg_data", _U32), 6: ("timeout", "u64"), 8: ("flags", _U32)},
    "queue": {1: ("num", "u16"), 2: ("total", "u16"), 3: ("flags", "u16"), 4: ("sreg_qnum", _U32)},
    "quota": {1: ("bytes", "u64"), 2: ("flags", _U32), 4: ("consumed", "u64")},
    "last": {1: ("set", _U32), 2: ("msecs", "u64")},
    "hash": {1: ("sreg", _U32), 2: ("dreg", _U32), 3: ("len", _U32), 4: ("modulus", _U32),
             5: ("seed", _U32), 6: ("offset", _U32), 7: ("type", _U32)},
    "numgen": {1: ("dreg", _U32), 2: ("modulus", _U32), 3: ("type", _U32), 4: ("offset", _U32)},
    "objref": {1: ("imm_type", _U32), 2: ("imm_name", _STR), 3: ("set_sreg", _U32),
               4: ("set_name", _STR), 5: ("set_id", _U32)},
    "connlimit": {1: ("count", _U32), 2: ("flags", _U32)},
    "notrack": {},
}

# Attributes that change with traffic or time: left out of the digest, or it never settles.
VOLATILE = {"counter": {1, 2, 3}, "quota": {4}, "last": {1, 2}}

_INT = {"u8": ">B", "u16": ">H", "u32": ">I", "i32": ">i", "u64": ">Q"}
_INT_STRUCTS = {fmt: struct.Struct(code) for fmt, code in _INT.items()}
_ATTR = NLATTR


def _decode_data(buf: bytes) -> bytes | tuple[str, str | None]:
    """NFTA_DATA_VALUE → bytes; NFTA_DATA_VERDICT → (verdict, chain)."""
    if len(buf) >= 4:  # the common case: a single NFTA_DATA_VALUE
        length, kind = _ATTR.unpack_from(buf, 0)
        if kind & NLA_TYPE_MASK == NFTA_DATA_VALUE and 4 <= length <= len(buf) \
                and len(buf) - ((length + 3) & ~3) < 4:
            return buf[4:length]
    for kind, start, end in iter_attrs(buf):
        if kind == NFTA_DATA_VALUE:
            return bytes(buf[start:end])
        if kind == NFTA_DATA_VERDICT:
            code, chain = 0, None
            for vkind, vs, ve in iter_attrs(buf, start, end):
                if vkind == NFTA_VERDICT_CODE:
                    code = struct.unpack(">i", buf[vs:vs + 4])[0]
                elif vkind == NFTA_VERDICT_CHAIN:
                    chain = as_str(buf[vs:ve])
            return VERDICTS.get(code, str(code)), chain
    return b""


def _compile(name: str, attr_type: int) -> tuple[str, object]:
    """(field, decoder) for one attribute of one expression; the decoder takes the
    payload bytes. Decided once per (expression, attribute), not once per rule."""
    field, fmt = SCHEMA.get(name, {}).get(attr_type, (f"attr{attr_type}", "raw"))
    if fmt in _INT_STRUCTS:
        unpack, size = _INT_STRUCTS[fmt].unpack_from, _INT_STRUCTS[fmt].size

        def decode(payload: bytes) -> int:
            if len(payload) < size:
                raise ValueError(f"{name}: attribute {field} is truncated")
            return unpack(payload)[0]
    elif fmt == _STR:
        decode = as_str
    elif fmt == _DATA:
        decode = _decode_data
    else:
        decode = bytes
    return field, decode


_DECODERS: dict[tuple[str, int], tuple[str, object]] = {}
def decode_fields(name: str, raw: bytes) -> dict[str, object]:
    """The expression's attributes by field name. Raises ValueError if malformed."""
    out: dict[str, object] = {}
    decoders, unpack = _DECODERS, _ATTR.unpack_from
    pos, end = 0, len(raw)
    while pos + 4 <= end:
        length, kind = unpack(raw, pos)
        if length < 4 or pos + length > end:
            raise ValueError(f"malformed netlink attribute at offset {pos}")
        kind &= NLA_TYPE_MASK
        entry = decoders.get((name, kind))
        if entry is None:
            entry = decoders[(name, kind)] = _compile(name, kind)
        out[entry[0]] = entry[1](raw[pos + 4:pos + length])
        pos += (length + 3) & ~3
    if 0 < end - pos:
        raise ValueError(f"{end - pos} stray bytes after the last netlink attribute")
    return out


_NAMES: dict[bytes, str] = {}  # expression names as the kernel sends them → str


def split_expressions(buf: bytes, start: int = 0, end: int | None = None
                      ) -> list[tuple[str, bytes]]:
    """(name, raw NFTA_EXPR_DATA payload) of each element of an NFTA_RULE_EXPRESSIONS list.

    One flat walk, no generators: a snapshot of 100k rules has a million of these."""
    out = []
    names, unpack = _NAMES, _ATTR.unpack_from
    pos = start
    end = len(buf) if end is None else end
    while pos + 4 <= end:
        length, kind = unpack(buf, pos)
        if length < 4 or pos + length > end:
            raise ValueError(f"malformed netlink attribute at offset {pos}")
        e = pos + length
        if kind & NLA_TYPE_MASK == NFTA_LIST_ELEM:
            name, data = "", b""
            p = pos + 4
            while p + 4 <= e:  # the element's attributes: NFTA_EXPR_NAME, NFTA_EXPR_DATA
                alen, akind = unpack(buf, p)
                if alen < 4 or p + alen > e:
                    raise ValueError(f"malformed netlink attribute at offset {p}")
                akind &= NLA_TYPE_MASK
                if akind == NFTA_EXPR_NAME:
                    raw_name = bytes(buf[p + 4:p + alen])
                    name = names.get(raw_name)
                    if name is None:
                        name = names[raw_name] = as_str(raw_name)
                elif akind == NFTA_EXPR_DATA:
                    data = bytes(buf[p + 4:p + alen])
                p += (alen + 3) & ~3
            if 0 < e - p:
                raise ValueError(f"{e - p} stray bytes after the last netlink attribute")
            out.append((name, data))
        pos += (length + 3) & ~3
    if 0 < end - pos:
        raise ValueError(f"{end - pos} stray bytes after the last netlink attribute")
    return out


def element_bounds(blob: bytes) -> list[tuple[int, int]] | None:
    """(start, end) of each element of an NFTA_RULE_EXPRESSIONS payload, padding
    included: the bytes that make one expression, to look it up by. None when the
    lengths do not add up (decode it with split_expressions, which says why)."""
    out = []
    pos, end = 0, len(blob)
    unpack = _ATTR.unpack_from
    while pos + 4 <= end:
        length = unpack(blob, pos)[0]
        if length < 4 or pos + length > end:
            return None
        step = (length + 3) & ~3
        out.append((pos, pos + step))
        pos += step
    return out if pos == end else None


_ELEMENT = struct.Struct("=HHHH")   # list element header, then its NFTA_EXPR_NAME header


def expression_spans(blob: bytes) -> tuple[bytes, list[tuple[str, int, int]]]:
    """(buffer, [(name, start, end)]): each expression's NFTA_EXPR_DATA payload is
    buffer[start:end]. split_expressions() without copying each expression out, for
    the kernel's layout (name, then data); any other goes the long way. Raises
    ValueError when malformed."""
    out = []
    pos, end = 0, len(blob)
    unpack, header, names = _ELEMENT.unpack_from, _ATTR.unpack_from, _NAMES
    while pos + 8 <= end:
        length, kind, name_len, name_kind = unpack(blob, pos)
        data = pos + 4 + ((name_len + 3) & ~3)
        if kind & NLA_TYPE_MASK != NFTA_LIST_ELEM or name_kind & NLA_TYPE_MASK != NFTA_EXPR_NAME \
                or length < 8 or pos + length > end or data + 4 > pos + length:
            break
        data_len, data_kind = header(blob, data)
        if data_kind & NLA_TYPE_MASK != NFTA_EXPR_DATA or data + data_len > pos + length:
            break
        raw_name = blob[pos + 8:pos + 4 + name_len]
        name = names.get(raw_name)
        if name is None:
            name = as_str(raw_name)
            if len(names) < 256:
                names[raw_name] = name
        out.append((name, data + 4, data + data_len))
        pos += (length + 3) & ~3
    if pos == end:
        return blob, out
    parts = split_expressions(blob)   # raises ValueError when malformed
    buffer, out, at = b"".join(raw for _, raw in parts), [], 0
    for name, raw in parts:
        out.append((name, at, at + len(raw)))
        at += len(raw)
    return buffer, out


def stable_bytes(name: str, raw: bytes) -> bytes:
    """The expression without its traffic-driven attributes, for digests."""
    volatile = VOLATILE.get(name)
    if not volatile:
        return raw
    try:
        return b"".join(raw[s - 4:e] for k, s, e in iter_attrs(raw) if k not in volatile)
    except ValueError:
        return raw


def encode_expressions(exprs) -> bytes:
    """An NFTA_RULE_EXPRESSIONS payload, as the kernel dumps it (nests without
    NLA_F_NESTED), from (name, raw data) pairs: Expr objects or tuples."""
    return b"".join(attr(NFTA_LIST_ELEM, attr_str(NFTA_EXPR_NAME, name) + attr(NFTA_EXPR_DATA, raw))
                    for name, raw in exprs)


# An element's NFTA_EXPR_NAME attribute, padded, as the kernel writes it: 12 bytes
# for each of the names that hold traffic-driven attributes.
_VOLATILE_NAME_ATTRS = {attr_str(NFTA_EXPR_NAME, name): name for name in VOLATILE}
_NAME_ATTR_LEN = {len(a) for a in _VOLATILE_NAME_ATTRS}.pop()
# A counter as the kernel dumps it: 44 bytes, data = bytes (u64) + packets (u64) and
# nothing else, so nothing of it is left but its name.
_BARE_COUNTER = (44, _ATTR.pack(28, NFTA_EXPR_DATA) + _ATTR.pack(12, 1), _ATTR.pack(12, 2))


def stable_expressions(blob: bytes) -> bytes:
    """An NFTA_RULE_EXPRESSIONS payload without its traffic-driven attributes
    (counter values, quota consumed, last used), for digests. Only the list's
    elements are walked: every other expression is hashed as the kernel sent it,
    without being decoded. Malformed input comes back whole."""
    volatile, unpack, width = _VOLATILE_NAME_ATTRS, _ATTR.unpack_from, _NAME_ATTR_LEN
    counter_len, counter_head, counter_packets = _BARE_COUNTER
    pieces: list[bytes] = []
    pos = done = 0
    end = len(blob)
    try:
        while pos + 4 <= end:
            length = unpack(blob, pos)[0]
            if length < 4 or pos + length > end:
                return blob
            name = volatile.get(blob[pos + 4:pos + 4 + width]) if length >= 4 + width else None
            if name is not None:
                pieces += (blob[done:pos], b"\0V", name.encode(), b"\0")
                if not (length == counter_len and blob[pos + 16:pos + 24] == counter_head
                        and blob[pos + 32:pos + 36] == counter_packets):
                    (_, data), = split_expressions(blob, pos, pos + length)
                    pieces.append(stable_bytes(name, data))
                done = pos + ((length + 3) & ~3)
            pos += (length + 3) & ~3
    except ValueError:
        return blob
    if not pieces:
        return blob
    pieces.append(blob[done:])
    return b"".join(pieces)


# --- building ---------------------------------------------------------------
# One encoder driven by SCHEMA, so what we write is what decode_fields() reads.

_BY_FIELD = {name: {field: (num, kind) for num, (field, kind) in attrs.items()}
             for name, attrs in SCHEMA.items()}


def _encode_field(num: int, kind: str, value) -> bytes:
    if kind in _INT_STRUCTS:
        return attr(num, _INT_STRUCTS[kind].pack(value))
    if kind == _STR:
        return attr_str(num, value)
    if kind == _DATA:
        if isinstance(value, tuple):  # (verdict, chain)
            verdict_name, chain = value
            inner = [attr_u32(NFTA_VERDICT_CODE, VERDICT_CODES[verdict_name])]
            if chain:
                inner.append(attr_str(NFTA_VERDICT_CHAIN, chain))
            return nested(num, nested(NFTA_DATA_VERDICT, *inner))
        return nested(num, attr(NFTA_DATA_VALUE, value))
    return attr(num, value)


def build(kind: str, /, **fields) -> bytes:
    """One NFTA_LIST_ELEM of an NFTA_RULE_EXPRESSIONS list: build("meta", key=7, dreg=1).
    Integers go big-endian, data as NFTA_DATA_VALUE, a (verdict, chain) pair as
    NFTA_DATA_VERDICT, as the kernel expects them."""
    schema = _BY_FIELD[kind]
    data = [_encode_field(*schema[field], value) for field, value in fields.items()]
    return nested(NFTA_LIST_ELEM, attr_str(NFTA_EXPR_NAME, kind), nested(NFTA_EXPR_DATA, *data))


def meta_load(key: int, dreg: int = 1) -> bytes:
    return build("meta", key=key, dreg=dreg)


def cmp(op: int, data: bytes, sreg: int = 1) -> bytes:
    return build("cmp", sreg=sreg, op=op, data=data)


def ct_load(key: int, dreg: int = 1) -> bytes:
    return build("ct", dreg=dreg, key=key)


def bitwise(sreg: int, dreg: int, mask: bytes, xor: bytes) -> bytes:
    return build("bitwise", sreg=sreg, dreg=dreg, len=len(mask), mask=mask, xor=xor)


def payload_load(base: int, offset: int, length: int, dreg: int = 1) -> bytes:
    return build("payload", dreg=dreg, base=base, offset=offset, len=length)


def lookup(set_name: str, sreg: int = 1, set_id: int | None = None) -> bytes:
    if set_id is None:
        return build("lookup", set=set_name, sreg=sreg)
    return build("lookup", set=set_name, sreg=sreg, set_id=set_id)


def counter(packets: int = 0, nbytes: int = 0) -> bytes:
    return build("counter", bytes=nbytes, packets=packets)


def verdict(code: int, chain: str | None = None) -> bytes:
    return build("immediate", dreg=REG_VERDICT, data=(VERDICTS[code], chain))


def xt(kind: str, name: str, rev: int, info: bytes) -> bytes:
    """An x_tables match or target, as iptables-nft writes them."""
    return build(kind, name=name, rev=rev, info=info)


def ifname_bytes(name: str, padded: bool) -> bytes:
    """iptables compares "wt0\\0" (4 bytes); Go nftables users pad to IFNAMSIZ (16)."""
    raw = name.encode() + b"\0"
    return raw.ljust(IFNAMSIZ, b"\0") if padded else raw


def immediate_data(data: bytes, dreg: int = 1) -> bytes:
    """`immediate reg N <data>`: a constant into a data register (meta/ct set use it)."""
    return build("immediate", dreg=dreg, data=data)
