"""`fwgate compat --verify`: the real binary's save → restore round trip for this node's
tables, in a scratch namespace, compared rule by rule (fwgate.compat.roundtrip) — what
kube-router's next sync would make of each table, as ground truth for this node.

Read-only for the node: iptables-save runs in the node's namespace (the one fwgate is
in), iptables-restore and the second listing in a namespace of our own, deleted after.
Needs `nft` (its JSON listing) and root.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field

from ..compat.binaries import Binary
from ..compat.roundtrip import listing, short
from .iptables import tool_argv
from .netns import call_in, throwaway
from .nfsock import NfSocket
from .nft import snapshot

TIMEOUT = 60.0


@dataclass
class Changed:
    chain: str
    position: int
    handle: int | None          # the rule's handle now (None: a rule the restore added)
    now: str                    # its normalised expressions, as JSON
    after: str | None           # after the round trip; None: gone


@dataclass
class TableTrip:
    family: str
    table: str
    binary: str
    saved: str                  # saved | left out | aborted
    restore_error: str | None = None    # iptables-restore refused the text: every sync fails
    changed: list[Changed] = field(default_factory=list)
    gone_chains: list[str] = field(default_factory=list)
    error: str | None = None    # we could not run it


def _run(argv: list[str], input: str | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, errors="replace",
                              input=input, timeout=TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(argv, 127, "", str(exc))


def _xts(family: str, table: str) -> dict[int, list]:
    with NfSocket() as sock:
        snap = snapshot(sock, families=(family,))
    from ..model import TableRef
    t = snap.tables.get(TableRef(family, table))
    return {r.handle: [(e.name, e.fields.get("name"), e.fields.get("info") or b"")
                       for e in r.exprs if e.name in ("match", "target")]
            for r in (t.rules if t else ())}


def _listing(family: str, table: str) -> dict[str, list] | None:
    done = _run(["nft", "-n", "-j", "list", "table", family, table])
    return listing(done.stdout, _xts(family, table)) if done.returncode == 0 else None


def restore_argv(binary: Binary, family: str) -> list[str] | None:
    save = tool_argv(binary, family, save=True)
    if not save:
        return None
    if len(save) == 2:
        return [save[0], save[1].replace("-save", "-restore")]
    path = save[0].replace("-save", "-restore")
    return [path] if os.access(path, os.X_OK) else None


def round_trip(binary: Binary, family: str, table: str) -> TableTrip:
    """In the current namespace: save the table, restore it into a scratch namespace,
    compare both listings."""
    shown = binary.path + (f" ({binary.version})" if binary.version else "")
    trip = TableTrip(family, table, shown, "aborted")
    save, restore = tool_argv(binary, family, save=True), restore_argv(binary, family)
    if not save or not restore or not shutil.which("nft"):
        trip.error = "needs the binary's -save and -restore and nft"
        return trip
    done = _run([*save, "-t", table])
    lines = done.stdout.splitlines()
    saved = f"*{table}" in lines and "COMMIT" in lines[lines.index(f"*{table}"):]
    trip.saved = "saved" if saved and done.returncode == 0 else \
        "aborted" if done.returncode else "left out"
    if trip.saved != "saved":
        return trip
    before = _listing(family, table) or {}
    with throwaway("fwv") as scratch:
        def there():
            back = _run([*restore, "-T", table], input=done.stdout)
            return back, (_listing(family, table) if back.returncode == 0 else None)
        back, after = call_in(scratch, there)
    if back.returncode:
        trip.restore_error = (back.stderr or back.stdout).strip()[:300] or f"exit {back.returncode}"
        return trip
    after = after or {}
    for chain, rules in before.items():
        if chain not in after:
            trip.gone_chains.append(chain)
            continue
        now = after[chain]
        for i, (handle, exprs) in enumerate(rules):
            other = now[i][1] if i < len(now) else None
            if other != exprs:
                trip.changed.append(Changed(chain, i, handle, short(exprs),
                                            None if other is None else short(other)))
    return trip


def verify(binary: Binary, tables: list[tuple[str, str]], netns: str | None) -> list[TableTrip]:
    """Each (family, table) through the binary's round trip, in `netns` (None: here)."""
    def run_all():
        return [round_trip(binary, fam, name) for fam, name in tables]
    return call_in(netns, run_all) if netns else run_all()
