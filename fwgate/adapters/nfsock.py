"""The NETLINK_NETFILTER socket: requests, dumps, events and batches.

Framing and attributes are fwgate.netlink's; this module only moves bytes."""
from __future__ import annotations

import os
import socket
from collections.abc import Iterator

from ..netlink.attrs import as_u32
from ..netlink.consts import (
    GETGEN, NETLINK_ADD_MEMBERSHIP, NETLINK_EXT_ACK, NETLINK_NETFILTER, NFTA_GEN_ID, NLM_F_DUMP,
    NLM_F_DUMP_INTR, NLM_F_MULTI, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, SOL_NETLINK,
)
from ..netlink.messages import Message, Msg, batch, encode, error_code, messages, parse

RECV_SIZE = 1 << 17  # more than the kernel puts in one datagram (a dump's is at most 32 KiB)
SO_RCVBUFFORCE = 33


class NetlinkError(OSError):
    """The kernel refused a request; `errno` holds its answer."""


class DumpInterrupted(Exception):
    """The ruleset changed while it was being dumped; dump again."""


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
        self.portid = self.sock.getsockname()[0]  # events of our own transactions carry it
        self.seq = int.from_bytes(os.urandom(2), "big")
        self._buf = bytearray(RECV_SIZE)
        self._view = memoryview(self._buf)

    def _setbuf(self, size: int) -> None:
        # SO_RCVBUFFORCE passes rmem_max when we hold CAP_NET_ADMIN; fall back quietly.
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
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
        return messages(self._recv(flags))

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
            for head, start, end in parse(buf):
                _, mtype, flags, mseq, _ = head
                if mseq != seq:
                    continue  # a late answer to an earlier request
                if flags & NLM_F_DUMP_INTR:
                    interrupted = True
                if mtype == NLMSG_DONE:
                    if interrupted:
                        raise DumpInterrupted()
                    return
                if mtype == NLMSG_ERROR:
                    code = error_code(buf, start)
                    if code:
                        raise NetlinkError(code, os.strerror(code))
                    return
                try:
                    yield Message(buf, start, end, head)
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
            for (_, mtype, _, mseq, _), _, _ in parse(self._recv()):
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

    def batch(self, messages: list[Msg], genid: int | None = None) -> None:
        """Commit (cmd, family, flags, payload) messages as one transaction; with
        genid, only if no other transaction committed since (else ERESTART)."""
        data, begin_seq, seqs, self.seq = batch(messages, self.next_seq(), genid)
        self.sock.send(data)
        pending, first_error = set(seqs), 0
        while pending:
            buf = self._recv()
            for (_, mtype, _, mseq, _), start, _ in parse(buf):
                # A refused batch (e.g. a stale genid) is answered on its BEGIN.
                if mtype == NLMSG_ERROR and (mseq in pending or mseq == begin_seq):
                    pending.discard(mseq)
                    code = error_code(buf, start)
                    if code and not first_error:
                        first_error = code
                        # An aborted batch answers only up to the failing message.
                        pending = set()
        if first_error:
            raise NetlinkError(first_error, os.strerror(first_error))
