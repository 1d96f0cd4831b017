"""Netlink attributes: the one walker, the builders and the scalar readers."""
from __future__ import annotations

import struct
from collections.abc import Iterator

from .consts import NLA_F_NESTED, NLA_TYPE_MASK

NLATTR = struct.Struct("=HH")  # length, type: host order, like every netlink header
_U32, _I32, _U64 = struct.Struct("!I"), struct.Struct("!i"), struct.Struct("!Q")


def pad(n: int) -> int:
    return (n + 3) & ~3


def iter_attrs(buf: bytes | memoryview, start: int = 0, end: int | None = None
               ) -> Iterator[tuple[int, int, int]]:
    """Yield (type, payload_start, payload_end) of each attribute in buf[start:end].

    A truncated or malformed attribute ends the walk with ValueError, so the
    caller can report it instead of reading garbage. The hot loops of the codec
    (expression lists, rule messages) inline this walk; tests hold them to it."""
    end = len(buf) if end is None else end
    pos = start
    unpack = NLATTR.unpack_from
    while pos + 4 <= end:
        length, kind = unpack(buf, pos)
        if length < 4 or pos + length > end:
            raise ValueError(f"malformed netlink attribute at offset {pos}")
        yield kind & NLA_TYPE_MASK, pos + 4, pos + length
        pos += (length + 3) & ~3
    if 0 < end - pos:
        raise ValueError(f"{end - pos} stray bytes after the last netlink attribute")


def iter_packed(buf: bytes) -> Iterator[tuple[int, int, int]]:
    """iter_attrs for attributes kept back to back without their padding (a snapshot's
    set definitions, adapters/nft.py): (type, payload_start, payload_end); a length
    that cannot be ends the walk."""
    pos, end, unpack = 0, len(buf), NLATTR.unpack_from
    while pos + 4 <= end:
        length, kind = unpack(buf, pos)
        if length < 4 or pos + length > end:
            return
        yield kind & NLA_TYPE_MASK, pos + 4, pos + length
        pos += length


def attrs(buf: bytes | memoryview, start: int = 0, end: int | None = None) -> dict[int, bytes]:
    return {k: bytes(buf[s:e]) for k, s, e in iter_attrs(buf, start, end)}


def attr(kind: int, payload: bytes) -> bytes:
    length = NLATTR.size + len(payload)
    return NLATTR.pack(length, kind) + payload + b"\0" * (pad(length) - length)


def nested(kind: int, *children: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(children))


def attr_str(kind: int, value: str) -> bytes:
    return attr(kind, value.encode() + b"\0")


def attr_u32(kind: int, value: int) -> bytes:
    return attr(kind, _U32.pack(value & 0xFFFFFFFF))


def attr_u64(kind: int, value: int) -> bytes:
    return attr(kind, _U64.pack(value))


def as_str(raw: bytes) -> str:
    return bytes(raw).split(b"\0", 1)[0].decode(errors="replace")


def as_u32(raw: bytes) -> int:
    return _U32.unpack_from(raw)[0]


def as_i32(raw: bytes) -> int:
    return _I32.unpack_from(raw)[0]


def as_u64(raw: bytes) -> int:
    return _U64.unpack_from(raw)[0]
