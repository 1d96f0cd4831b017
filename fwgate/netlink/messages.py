"""Netlink message framing: nlmsghdr + nfgenmsg, parsing datagrams, batches."""
from __future__ import annotations

import struct
from collections.abc import Iterator

from .attrs import attr_u32, attrs, iter_attrs, pad
from .consts import (
    NFNL_BATCH_GENID, NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END, NFNL_SUBSYS_NFTABLES, NLM_F_ACK,
    NLM_F_REQUEST,
)

NLMSGHDR = struct.Struct("=IHHII")   # length, type, flags, seq, portid
NFGENMSG = struct.Struct("!BBH")     # family, version, res_id (big endian)
HDRLEN = NLMSGHDR.size + NFGENMSG.size

# One message to commit: (NFT_MSG_* command, family number, NLM_F_* flags, attributes)
Msg = tuple[int, int, int, bytes]


class Message:
    """One received nfnetlink message: its header fields and its attributes, in place.

    `portid` is the sender's netlink port: for an nf_tables event, the port of the
    socket whose transaction made the change."""

    __slots__ = ("subsys", "cmd", "flags", "seq", "portid", "family", "res_id", "buf", "start",
                 "end")

    def __init__(self, buf: bytes, start: int, end: int, head: tuple | None = None):
        """head: the nlmsghdr fields as parse() read them, so they are not read twice."""
        _, mtype, self.flags, self.seq, self.portid = head or NLMSGHDR.unpack_from(buf, start)
        self.subsys, self.cmd = mtype >> 8, mtype & 0xFF
        self.buf, self.start, self.end = buf, start + HDRLEN, end
        self.family, _, self.res_id = NFGENMSG.unpack_from(buf, start + NLMSGHDR.size)

    def attrs(self) -> dict[int, bytes]:
        return attrs(self.buf, self.start, self.end)

    def iter_attrs(self) -> Iterator[tuple[int, int, int]]:
        return iter_attrs(self.buf, self.start, self.end)


def encode(cmd: int, family: int, flags: int, seq: int, payload: bytes = b"",
           res_id: int = 0, subsys: int | None = NFNL_SUBSYS_NFTABLES) -> bytes:
    mtype = cmd if subsys is None else (subsys << 8) | cmd
    body = NFGENMSG.pack(family, 0, res_id) + payload
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), mtype, flags, seq, 0) + body


def parse(buf: bytes) -> Iterator[tuple[tuple, int, int]]:
    """Yield (nlmsghdr fields: length, type, flags, seq, portid; start; end) of each
    netlink message in buf."""
    pos, size, unpack = 0, NLMSGHDR.size, NLMSGHDR.unpack_from
    while pos + size <= len(buf):
        head = unpack(buf, pos)
        length = head[0]
        if length < size or pos + length > len(buf):
            raise ValueError("truncated netlink message")
        yield head, pos, pos + length
        pos += pad(length)


def messages(buf: bytes) -> list[Message]:
    """Every message of a datagram, framing and all (errors and DONE included)."""
    return [Message(buf, start, end, head) for head, start, end in parse(buf)]


def error_code(buf: bytes, start: int) -> int:
    """The positive errno of an NLMSG_ERROR message (0: an ACK)."""
    return -struct.unpack_from("=i", buf, start + NLMSGHDR.size)[0]


def batch(messages: list[Msg], first_seq: int, genid: int | None = None
          ) -> tuple[bytes, int, list[int], int]:
    """One nf_tables transaction: BEGIN, the messages (each ACKed), END.

    Returns (bytes, the BEGIN's seq, the messages' seqs, the END's seq). With
    genid the kernel refuses the whole batch (ERESTART) if another transaction
    committed since that generation: compare-and-swap."""
    seq = first_seq
    begin_attrs = attr_u32(NFNL_BATCH_GENID, genid) if genid is not None else b""
    chunks = [encode(NFNL_MSG_BATCH_BEGIN, 0, NLM_F_REQUEST, seq, begin_attrs,
                     res_id=NFNL_SUBSYS_NFTABLES, subsys=None)]
    begin_seq, seqs = seq, []
    for cmd, family, flags, payload in messages:
        seq = (seq + 1) & 0xFFFFFFFF
        seqs.append(seq)
        chunks.append(encode(cmd, family, flags | NLM_F_REQUEST | NLM_F_ACK, seq, payload))
    seq = (seq + 1) & 0xFFFFFFFF
    chunks.append(encode(NFNL_MSG_BATCH_END, 0, NLM_F_REQUEST, seq, b"",
                         res_id=NFNL_SUBSYS_NFTABLES, subsys=None))
    return b"".join(chunks), begin_seq, seqs, seq
