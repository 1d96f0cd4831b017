"""Captured nf_tables dumps, for kernel-free tests of the codec and the snapshot.

    PYTHONPATH=tests python -m fwgate_testing.dumps   # as root: rebuild tests/data/dumps/*.json

A capture is every request fwgate's snapshot made of a real kernel, in a namespace
made for it, and every reply message, byte for byte (hex). ReplaySocket answers
the same requests from the file, so fwgate.adapters.nft.snapshot() runs on it as
on the kernel. Each file also keeps `nft list ruleset` as the kernel printed it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fwgate.netlink.consts import GETGEN, NFTA_GEN_ID, NLM_F_DUMP
from fwgate.netlink.messages import HDRLEN, Message

DUMPS = Path(__file__).resolve().parents[1] / "data" / "dumps"
FAMILIES = ("ip", "ip6", "inet", "arp", "bridge")


def _key(cmd: int, family: int, flags: int, payload: bytes) -> str:
    return f"{cmd}:{family}:{int(bool(flags & NLM_F_DUMP))}:{payload.hex()}"


class ReplaySocket:
    """The requests a snapshot makes, answered from a capture."""

    def __init__(self, capture: dict):
        self.replies = capture["replies"]   # request -> one list of messages per time asked
        self.asked: dict[str, int] = {}
        self.portid = 4242

    def request_iter(self, cmd: int, family: int = 0, flags: int = 1, payload: bytes = b""):
        key = _key(cmd, family, flags, payload)
        answers = self.replies[key]
        turn = self.asked.get(key, 0)
        self.asked[key] = turn + 1
        for raw in answers[min(turn, len(answers) - 1)]:
            data = bytes.fromhex(raw)
            yield Message(data, 0, len(data))

    def request(self, cmd, family=0, flags=1, payload=b""):
        return list(self.request_iter(cmd, family, flags, payload))

    def dump(self, cmd, family, payload=b""):
        return self.request(cmd, family, NLM_F_DUMP, payload)

    def dump_iter(self, cmd, family, payload=b""):
        return self.request_iter(cmd, family, NLM_F_DUMP, payload)

    def genid(self) -> int:
        (reply,) = self.request(GETGEN)
        return int.from_bytes(reply.attrs()[NFTA_GEN_ID], "big")


def load(name: str) -> dict:
    return json.loads((DUMPS / f"{name}.json").read_text())


# --- capturing (root, a namespace of its own) -------------------------------------------

def _recording_socket():
    from fwgate.adapters.nfsock import NfSocket

    class Recording(NfSocket):
        def __init__(self):
            super().__init__()
            self.replies: dict[str, list[list[str]]] = {}

        def request_iter(self, cmd, family=0, flags=1, payload=b""):
            kept: list[str] = []
            self.replies.setdefault(_key(cmd, family, flags, payload), []).append(kept)
            for msg in super().request_iter(cmd, family, flags, payload):
                kept.append(bytes(msg.buf[msg.start - HDRLEN:msg.end]).hex())
                yield msg
    return Recording()


SCENES = {
    # Netbird's tables and its native rules in iptables' filter table, both families.
    "netbird": ["programmer --with-filter-table --ip6 --pause 0"],
    # kube-router's and kube-proxy's kind of rules from real iptables, then Netbird's.
    "k3s-node": ["ruleset 150", "programmer --pause 0"],
}


def capture(name: str, steps: list[str]) -> dict:
    """Build the scene in a fresh namespace and snapshot it, recording every reply."""
    from fwgate.adapters.netns import enter
    from fwgate.adapters.nft import snapshot
    ns = f"fwgate-dump-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for step in steps:
            what, *args = step.split()
            if what == "programmer":
                subprocess.run([sys.executable, "-m", "fwgate.programmer", "--netns", ns, *args],
                               check=True, capture_output=True)
            elif what == "ruleset":
                from .rulesets import filter_table
                subprocess.run(["ip", "netns", "exec", ns, "iptables-restore"], check=True,
                               input=filter_table(int(args[0])), text=True)
        listing = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "ruleset"],
                                 check=True, capture_output=True, text=True).stdout
        enter(ns)
        sock = _recording_socket()
        snap = snapshot(sock, families=FAMILIES)
        sock.close()
        return {"scene": steps, "nft": listing, "genid": snap.genid,
                "rules": sum(len(t.rules) for t in snap.tables.values()),
                "replies": sock.replies}
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False)


def main() -> int:
    DUMPS.mkdir(parents=True, exist_ok=True)
    for name, steps in SCENES.items():
        # Each capture in its own process: entering the namespace is for good.
        if os.fork() == 0:
            data = capture(name, steps)
            (DUMPS / f"{name}.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
            print(f"{name}: {data['rules']} rules, genid {data['genid']}")
            os._exit(0)
        _, status = os.wait()
        if status:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
