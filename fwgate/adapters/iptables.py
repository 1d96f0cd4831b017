"""A real iptables binary as the second opinion on what iptables-nft can read.

Read-only: only `-S` and `iptables-save` are run, inside the namespace we work
in. The binary that matters is the one kube-router runs: k3s's own copy under
/var/lib/rancher/k3s/data/<hash>/bin/aux/ (its `iptables` picks nft or legacy
mode by looking at the ruleset; a `(legacy)` version means it did not look at
nf_tables at all, and the cross-check says so).
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable

from ..compat.crosscheck import ChainListing, IptablesVerdict, TableSave
from ..compat.reader import IPTABLES_TABLES
from ..errors import EnvironmentProblem
from ..model import Table

K3S_DATA = "/var/lib/rancher/k3s/data"
TIMEOUT = 30.0

Runner = Callable[[list[str]], subprocess.CompletedProcess]


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def find_iptables(setting: str, k3s_data: str = K3S_DATA) -> str | None:
    """The iptables binary to cross-check with, per the `compat.iptables` setting:
    "none" → None; "auto" → k3s's bundled one if present (the `current` data
    directory first, then the newest), else None; a path (or a name on PATH) →
    that binary, or EnvironmentProblem if it is missing or not executable."""
    if setting == "none":
        return None
    if setting == "auto":
        current = os.path.join(k3s_data, "current", "bin", "aux", "iptables")
        if _executable(current):
            return current
        found = [p for p in glob.glob(os.path.join(k3s_data, "*", "bin", "aux", "iptables"))
                 if _executable(p)]
        return max(found, key=os.path.getmtime, default=None)
    if "/" not in setting:
        found = shutil.which(setting)
        if found is None:
            raise EnvironmentProblem(f"iptables binary {setting!r}: not found on PATH")
        return found
    if not os.path.exists(setting):
        raise EnvironmentProblem(f"iptables binary {setting}: no such file")
    if not _executable(setting):
        raise EnvironmentProblem(f"iptables binary {setting}: not an executable file")
    return setting


def tool_argv(binary: str, family: str, save: bool = False) -> list[str] | None:
    """The command for `family` ("ip" or "ip6"), listing or saving, next to `binary`:
    .../iptables → .../ip6tables, .../iptables-save; .../iptables-nft →
    .../ip6tables-nft-save. A multi-call binary (xtables-nft-multi) gets the
    tool name as its first argument. None if the sibling does not exist."""
    directory, base = os.path.split(binary)
    stem = base.replace("ip6tables", "iptables", 1).removesuffix("-save")
    if "iptables" not in stem:
        name = ("ip6tables" if family == "ip6" else "iptables") + ("-save" if save else "")
        return [binary, name]
    if family == "ip6":
        stem = stem.replace("iptables", "ip6tables", 1)
    base = stem + ("-save" if save else "")
    path = os.path.join(directory, base)
    return [path] if path == binary or _executable(path) else None


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, errors="replace",
                              timeout=TIMEOUT, check=False)
    except OSError as exc:
        raise EnvironmentProblem(f"cannot run {argv[0]}: {exc.strerror}") from None
    except subprocess.TimeoutExpired:
        raise EnvironmentProblem(f"{' '.join(argv)}: no answer in {TIMEOUT:.0f}s") from None


def _lines(text: str) -> str | None:
    text = text.strip()
    return text or None


def _saved(stdout: str, table: str) -> bool:
    lines = stdout.splitlines()
    if f"*{table}" not in lines:
        return False
    return "COMMIT" in lines[lines.index(f"*{table}"):]


def cross_check(binary: str, netns: str | None, tables: Iterable[Table],
                run: Runner = _run) -> IptablesVerdict:
    """Run `binary -t T -S C` for each chain and `binary-save -t T` for each table
    (ip6tables for ip6 tables; arp/bridge tables are not checked) inside `netns`."""
    prefix = ["ip", "netns", "exec", netns] if netns else []
    chains: list[ChainListing] = []
    saves: list[TableSave] = []
    skipped: list[str] = []
    version = _lines(run(prefix + (tool_argv(binary, "ip") or [binary]) + ["--version"]).stdout)
    for table in tables:
        if table.family not in ("ip", "ip6"):
            skipped.append(f"{table.family} {table.name}: only ip and ip6 tables are cross-checked")
            continue
        if table.name not in IPTABLES_TABLES[table.family]:
            skipped.append(f"{table.family} {table.name}: not one of iptables' tables, "
                           f"it cannot name it")
            continue
        lister = tool_argv(binary, table.family)
        saver = tool_argv(binary, table.family, save=True)
        if lister is None:
            skipped.append(f"{table.family} {table.name}: no ip6tables next to {binary}")
        for chain in table.chains if lister else ():
            done = run(prefix + lister + ["-t", table.name, "-S", chain.name])
            chains.append(ChainListing(table.family, table.name, chain.name, done.returncode,
                                       _lines(done.stderr)))
        if saver is None:
            skipped.append(f"{table.family} {table.name}: no -save tool next to {binary}")
            continue
        done = run(prefix + saver + ["-t", table.name])
        note = next((ln for ln in done.stdout.splitlines() if ln.startswith("# Table")), None)
        saves.append(TableSave(table.family, table.name, done.returncode,
                               _saved(done.stdout, table.name), note or _lines(done.stderr)))
    if version and "legacy" in version:
        skipped.append(f"{binary} runs in legacy mode ({version}): it does not read nf_tables")
    return IptablesVerdict(binary, version, tuple(chains), tuple(saves), tuple(skipped))




def mode_of(binary: str) -> str | None:
    """"nf_tables" or "legacy", from `binary --version`; None if it does not answer."""
    try:
        done = subprocess.run([binary, "--version"], capture_output=True, text=True,
                              errors="replace", timeout=TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = done.stdout + done.stderr
    for mode in ("nf_tables", "legacy"):
        if f"({mode})" in text:
            return mode
    return None
