"""A small nfnetlink (nf_tables) codec and socket.

pyroute2 enters namespaces and drives rtnetlink for us; for nf_tables we walk
the raw attributes ourselves: pyroute2's rule class mangles raw rule userdata,
and a digest over tens of thousands of rules must not pay for decoding what it
never looks at.
"""
from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_EXT_ACK = 11
NFNLGRP_NFTABLES = 7

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_APPEND = 0x800

NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF

NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN = 0x10
NFNL_MSG_BATCH_END = 0x11
NFNL_BATCH_GENID = 1

# NFT_MSG_* commands
NEWTABLE, GETTABLE, DELTABLE = 0, 1, 2
NEWCHAIN, GETCHAIN, DELCHAIN = 3, 4, 5
NEWRULE, GETRULE, DELRULE = 6, 7, 8
NEWSET, GETSET, DELSET = 9, 10, 11
NEWSETELEM, GETSETELEM, DELSETELEM = 12, 13, 14
NEWGEN, GETGEN = 15, 16
NEWOBJ, DELOBJ = 18, 20
NEWFLOWTABLE, DELFLOWTABLE = 22, 24

MSG_NAMES = {
    NEWTABLE: "NEWTABLE", DELTABLE: "DELTABLE", NEWCHAIN: "NEWCHAIN",
    DELCHAIN: "DELCHAIN", NEWRULE: "NEWRULE", DELRULE: "DELRULE",
    NEWSET: "NEWSET", DELSET: "DELSET", NEWSETELEM: "NEWSETELEM",
    DELSETELEM: "DELSETELEM", NEWGEN: "NEWGEN", NEWOBJ: "NEWOBJ",
    DELOBJ: "DELOBJ", NEWFLOWTABLE: "NEWFLOWTABLE", DELFLOWTABLE: "DELFLOWTABLE",
}

# Attribute numbers (include/uapi/linux/netfilter/nf_tables.h)
NFTA_TABLE_NAME, NFTA_TABLE_FLAGS, NFTA_TABLE_HANDLE = 1, 2, 4
NFTA_CHAIN_TABLE, NFTA_CHAIN_HANDLE, NFTA_CHAIN_NAME, NFTA_CHAIN_HOOK = 1, 2, 3, 4
NFTA_CHAIN_POLICY, NFTA_CHAIN_TYPE, NFTA_CHAIN_COUNTERS, NFTA_CHAIN_FLAGS = 5, 7, 8, 10
NFTA_HOOK_HOOKNUM, NFTA_HOOK_PRIORITY = 1, 2
NFTA_RULE_TABLE, NFTA_RULE_CHAIN, NFTA_RULE_HANDLE, NFTA_RULE_EXPRESSIONS = 1, 2, 3, 4
NFTA_RULE_COMPAT, NFTA_RULE_POSITION, NFTA_RULE_USERDATA = 5, 6, 7
NFTA_SET_TABLE, NFTA_SET_NAME = 1, 2
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS = 1, 2, 3
NFTA_SET_ELEM_EXPIRATION, NFTA_SET_ELEM_EXPR, NFTA_SET_ELEM_EXPRESSIONS = 5, 9, 11
NFTA_GEN_ID = 1
NFTA_LIST_ELEM = 1
NFTA_EXPR_NAME, NFTA_EXPR_DATA = 1, 2
NFTA_DATA_VALUE, NFTA_DATA_VERDICT = 1, 2
NFTA_VERDICT_CODE, NFTA_VERDICT_CHAIN = 1, 2

FAMILIES = {"inet": 1, "ip": 2, "arp": 3, "netdev": 5, "bridge": 7, "ip6": 10}
FAMILY_NAMES = {v: k for k, v in FAMILIES.items()}

_NLMSGHDR = struct.Struct("=IHHII")
_NFGENMSG = struct.Struct("!BBH")
_NLATTR = struct.Struct("=HH")
_HDRLEN = _NLMSGHDR.size + _NFGENMSG.size
RECV_SIZE = 1 << 17  # more than the kernel puts in one datagram (a dump's is at most 32 KiB)


class NetlinkError(OSError):
    """The kernel refused a request; `errno` holds its answer."""


class DumpInterrupted(Exception):
    """The ruleset changed while it was being dumped; dump again."""


# --- attributes -------------------------------------------------------------

def _pad(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, payload: bytes) -> bytes:
    length = _NLATTR.size + len(payload)
    return _NLATTR.pack(length, kind) + payload + b"\0" * (_pad(length) - length)


def nested(kind: int, *children: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(children))


def attr_str(kind: int, value: str) -> bytes:
    return attr(kind, value.encode() + b"\0")


def attr_u32(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("!I", value & 0xFFFFFFFF))


def attr_u64(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("!Q", value))


def iter_attrs(buf: bytes | memoryview, start: int = 0, end: int | None = None
               ) -> Iterator[tuple[int, int, int]]:
    """Yield (type, payload_start, payload_end) of each attribute in buf[start:end].

    A truncated or malformed attribute ends the walk with ValueError, so the
    caller can report it instead of reading garbage."""
    end = len(buf) if end is None else end
    pos = start
    unpack = _NLATTR.unpack_from
    while pos + 4 <= end:
        length, kind = unpack(buf, pos)
        if length < 4 or pos + length > end:
            raise ValueError(f"malformed netlink attribute at offset {pos}")
        yield kind & NLA_TYPE_MASK, pos + 4, pos + length
        pos += (length + 3) & ~3
    if 0 < end - pos:
        raise ValueError(f"{end - pos} stray bytes after the last netlink attribute")


def attrs(buf: bytes | memoryview, start: int = 0, end: int | None = None
          ) -> dict[int, bytes]:
    return {k: bytes(buf[s:e]) for k, s, e in iter_attrs(buf, start, end)}


def as_str(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


def as_u32(raw: bytes) -> int:
    return struct.unpack("!I", raw[:4])[0]


def as_i32(raw: bytes) -> int:
    return struct.unpack("!i", raw[:4])[0]


def as_u64(raw: bytes) -> int:
    return struct.unpack("!Q", raw[:8])[0]


# --- messages -----------------------------------------------------------------

class Message:
    """One received nfnetlink message: type, flags, family, res_id and attributes."""

    __slots__ = ("subsys", "cmd", "flags", "family", "res_id", "buf", "start", "end")

    def __init__(self, buf: bytes, start: int, end: int, mtype: int, flags: int):
        self.subsys, self.cmd, self.flags = mtype >> 8, mtype & 0xFF, flags
        self.buf, self.start, self.end = buf, start + _HDRLEN, end
        self.family, _, self.res_id = _NFGENMSG.unpack_from(buf, start + _NLMSGHDR.size)

    def attrs(self) -> dict[int, bytes]:
        return attrs(self.buf, self.start, self.end)

    def iter_attrs(self) -> Iterator[tuple[int, int, int]]:
        return iter_attrs(self.buf, self.start, self.end)


def encode(cmd: int, family: int, flags: int, seq: int, payload: bytes = b"",
           res_id: int = 0, subsys: int = NFNL_SUBSYS_NFTABLES) -> bytes:
    mtype = cmd if subsys is None else (subsys << 8) | cmd
    body = _NFGENMSG.pack(family, 0, res_id) + payload
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), mtype, flags, seq, 0) + body


def parse(buf: bytes) -> Iterator[tuple[int, int, int, int, int]]:
    """Yield (type, flags, seq, start, end) of each netlink message in buf."""
    pos = 0
    while pos + _NLMSGHDR.size <= len(buf):
        length, mtype, flags, seq, _ = _NLMSGHDR.unpack_from(buf, pos)
        if length < _NLMSGHDR.size or pos + length > len(buf):
            raise ValueError("truncated netlink message")
        yield mtype, flags, seq, pos, pos + length
        pos += _pad(length)


def _error_code(buf: bytes, start: int) -> int:
    return -struct.unpack_from("=i", buf, start + _NLMSGHDR.size)[0]


class NfSocket:
    """A NETLINK_NETFILTER socket in the calling thread's network namespace."""

    RCVBUF = 1 << 20

    def __init__(self, groups: tuple[int, ...] = (), rcvbuf: int = RCVBUF):
        try:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        except OSError as exc:
            raise NetlinkError(exc.errno, f"cannot open nf_tables netlink socket: {exc.strerror}") from None
        try:
            self.sock.bind((0, 0))
            self._setbuf(rcvbuf)
            self.sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
            for group in groups:
                self.sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)
        except OSError:
            self.sock.close()
            raise
        self.seq = int.from_bytes(os.urandom(2), "big")
        self._buf = bytearray(RECV_SIZE)
        self._view = memoryview(self._buf)

    def _setbuf(self, size: int) -> None:
        # SO_RCVBUFFORCE passes rmem_max when we hold CAP_NET_ADMIN; fall back quietly.
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, 33, size)  # SO_RCVBUFFORCE
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> NfSocket:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def next_seq(self) -> int:
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        return self.seq

    def _recv(self, flags: int = 0) -> bytes:
        """One datagram, read into a buffer we keep: a fresh 128 KiB bytes object per
        call costs an mmap and its page faults, and a dump is hundreds of calls."""
        n = self.sock.recv_into(self._buf, 0, flags)
        return self._view[:n].tobytes()

    def recv_messages(self, flags: int = 0) -> list[Message]:
        """One datagram's worth of messages. Raises OSError(ENOBUFS) on overflow."""
        buf = self._recv(flags)
        return [Message(buf, s, e, t, f) for t, f, _, s, e in parse(buf)]

    def request(self, cmd: int, family: int = 0, flags: int = NLM_F_REQUEST,
                payload: bytes = b"") -> list[Message]:
        """Send one request and collect its replies until DONE or the ACK."""
        return list(self.request_iter(cmd, family, flags, payload))

    def request_iter(self, cmd: int, family: int = 0, flags: int = NLM_F_REQUEST,
                     payload: bytes = b"") -> Iterator[Message]:
        """request(), yielding each reply as it arrives: a large dump is never held
        in memory all at once. Stopping early drains the rest of the reply, so the
        socket is ready for the next request."""
        seq = self.next_seq()
        self.sock.send(encode(cmd, family, flags | NLM_F_REQUEST, seq, payload))
        return self._replies(seq, multi=bool(flags & NLM_F_DUMP))

    def _replies(self, seq: int, multi: bool) -> Iterator[Message]:
        interrupted = False
        while True:
            buf = self._recv()
            for mtype, flags, mseq, start, end in parse(buf):
                if mseq != seq:
                    continue  # a late answer to an earlier request
                if flags & NLM_F_DUMP_INTR:
                    interrupted = True
                if mtype == NLMSG_DONE:
                    if interrupted:
                        raise DumpInterrupted()
                    return
                if mtype == NLMSG_ERROR:
                    code = _error_code(buf, start)
                    if code:
                        raise NetlinkError(code, os.strerror(code))
                    return
                try:
                    yield Message(buf, start, end, mtype, flags)
                except GeneratorExit:  # the caller stopped reading: finish the reply
                    if multi or flags & NLM_F_MULTI:
                        self._drain(seq)
                    raise
                if not multi and not flags & NLM_F_MULTI:
                    return

    def _drain(self, seq: int) -> None:
        """Read and drop the rest of an abandoned reply (a dump still running in the
        kernel makes the socket refuse the next one with EBUSY)."""
        while True:
            buf = self._recv()
            for mtype, _, mseq, _, _ in parse(buf):
                if mseq == seq and mtype in (NLMSG_DONE, NLMSG_ERROR):
                    return

    def genid(self) -> int:
        """The ruleset generation id: it moves with every committed transaction."""
        (reply,) = self.request(GETGEN)
        return as_u32(reply.attrs()[NFTA_GEN_ID])

    def dump(self, cmd: int, family: int, payload: bytes = b"") -> list[Message]:
        return self.request(cmd, family, NLM_F_DUMP, payload)

    def dump_iter(self, cmd: int, family: int, payload: bytes = b"") -> Iterator[Message]:
        """dump(), one message at a time as the kernel sends them."""
        return self.request_iter(cmd, family, NLM_F_DUMP, payload)

    def batch(self, messages: list[tuple[int, int, int, bytes]], genid: int | None = None) -> None:
        """Commit (cmd, family, flags, payload) messages as one transaction.

        With genid, the kernel refuses the whole batch (ERESTART) if any other
        transaction committed since that generation: compare-and-swap."""
        begin_attrs = attr_u32(NFNL_BATCH_GENID, genid) if genid is not None else b""
        begin_seq = self.next_seq()
        seqs, chunks = [], [encode(NFNL_MSG_BATCH_BEGIN, 0, NLM_F_REQUEST, begin_seq,
                                   begin_attrs, res_id=NFNL_SUBSYS_NFTABLES, subsys=None)]
        for cmd, family, flags, payload in messages:
            seq = self.next_seq()
            seqs.append(seq)
            chunks.append(encode(cmd, family, flags | NLM_F_REQUEST | NLM_F_ACK, seq, payload))
        chunks.append(encode(NFNL_MSG_BATCH_END, 0, NLM_F_REQUEST, self.next_seq(), b"",
                             res_id=NFNL_SUBSYS_NFTABLES, subsys=None))
        self.sock.send(b"".join(chunks))
        pending, first_error = set(seqs), 0
        while pending:
            buf = self._recv()
            for mtype, _, mseq, start, _ in parse(buf):
                # A refused batch (e.g. a stale genid) is answered on its BEGIN.
                if mtype == NLMSG_ERROR and (mseq in pending or mseq == begin_seq):
                    pending.discard(mseq)
                    code = _error_code(buf, start)
                    if code and not first_error:
                        first_error = code
                        # An aborted batch answers only up to the failing message.
                        pending = set()
        if first_error:
            raise NetlinkError(first_error, os.strerror(first_error))


def is_overflow(exc: OSError) -> bool:
    return exc.errno == errno.ENOBUFS
