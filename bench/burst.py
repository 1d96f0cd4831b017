"""A burst of rule changes: N one-rule transactions spread over D seconds into a
watched table (by default Netbird's `ip netbird`), the way a churning agent hits the
ruleset while fwgate waits. Transactions are sent back to back without waiting for
acknowledgements (errors still come back, and are checked). The rules go round-robin
into CHAINS chains made by --prepare: the kernel copies a chain's whole rule array on
every commit that changes it, so 10k appends to one chain take it ~10 s, not 1.

    ip netns exec NS python bench/burst.py --prepare
    ip netns exec NS python bench/burst.py --count 10000 --seconds 1

Prints JSON: the monotonic times of the first and the last commit, and the count.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import socket
import sys
import time

from fwgate.adapters.nfsock import NfSocket
from fwgate.netlink import consts as C
from fwgate.netlink import exprs as X
from fwgate.netlink import messages as M
from fwgate.programmer import IP, chain_msg, rule_msg

CHAINS = 200


def chain_name(i: int) -> str:
    return f"burst-{i % CHAINS:03d}"


def transaction(sock: NfSocket, table: str, i: int) -> bytes:
    address = (ipaddress.IPv4Address("10.96.0.0") + i).packed
    cmd, family, flags, payload = rule_msg(IP, table, chain_name(i), [
        X.payload_load(C.PAYLOAD_NETWORK, 12, 4), X.cmp(C.CMP_EQ, address),
        X.counter(), X.verdict(C.NF_ACCEPT)])
    return b"".join([
        M.encode(C.NFNL_MSG_BATCH_BEGIN, 0, C.NLM_F_REQUEST, sock.next_seq(), b"",
                    res_id=C.NFNL_SUBSYS_NFTABLES, subsys=None),
        M.encode(cmd, family, flags | C.NLM_F_REQUEST, sock.next_seq(), payload),
        M.encode(C.NFNL_MSG_BATCH_END, 0, C.NLM_F_REQUEST, sock.next_seq(), b"",
                    res_id=C.NFNL_SUBSYS_NFTABLES, subsys=None)])


def errors(sock: NfSocket) -> int:
    """Refusals the kernel sent back so far (no ACKs were asked for: anything is one)."""
    count = 0
    while True:
        try:
            messages = sock.recv_messages(socket.MSG_DONTWAIT)
        except BlockingIOError:
            return count
        count += len(messages)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--table", default="netbird")
    parser.add_argument("--prepare", action="store_true", help=f"create the {CHAINS} chains, then exit")
    args = parser.parse_args()
    refused = 0
    with NfSocket() as sock:
        if args.prepare:
            sock.batch([chain_msg(IP, args.table, chain_name(i)) for i in range(CHAINS)])
            return 0
        messages = [transaction(sock, args.table, i) for i in range(args.count)]
        start = time.monotonic()
        first = last = 0.0
        for i, message in enumerate(messages):
            due = start + args.seconds * i / args.count
            delay = due - time.monotonic()
            if delay > 0.0005:
                time.sleep(delay)
            sock.sock.send(message)  # the kernel commits it before send() returns
            last = time.monotonic()
            if not i:
                first = last
            if i % 256 == 255:
                refused += errors(sock)
        refused += errors(sock)
    print(json.dumps({"first": first, "last": last, "count": args.count, "refused": refused}))
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
