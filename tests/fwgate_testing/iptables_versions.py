"""Real iptables-nft builds of several versions, for tests that judge the reader model.

`scripts/iptables-versions` provides them under .cache/iptables/<version>/bin/ (or
$FWGATE_IPTABLES_CACHE): Debian 12's own 1.8.9 as wrappers around
/usr/sbin/xtables-nft-multi, newer versions as trees unpacked from Debian's later
suites, run through their own loader. Each bin/ holds iptables, ip6tables,
iptables-save, ip6tables-save, iptables-restore and ip6tables-restore (and, from
scripts/iptables-versions, arptables, arptables-save, ebtables, ebtables-save), all
nf_tables variants (never legacy).

    from fwgate_testing.iptables_versions import builds
    for version, bindir in builds().items():     # {"1.8.9": "/…/1.8.9/bin", "1.8.11": …}
        subprocess.run([f"{bindir}/iptables", "-S", "FORWARD"], …)

Without the script having run, builds() still offers the system's own iptables-nft:
it makes its bin/ of wrappers on first use (no network, nothing downloaded).
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APPLETS = ("iptables", "ip6tables", "iptables-save", "ip6tables-save", "iptables-restore",
           "ip6tables-restore")
SYSTEM_MULTI = "/usr/sbin/xtables-nft-multi"


def cache_dir() -> Path:
    return Path(os.environ.get("FWGATE_IPTABLES_CACHE") or ROOT / ".cache" / "iptables")


def _vkey(version: str) -> tuple:
    return tuple(int(x) if x.isdigit() else 0 for x in re.split(r"[.~+-]", version))


def _usable(bindir: Path) -> bool:
    return all(os.access(bindir / a, os.X_OK) for a in APPLETS)


def system_version() -> str | None:
    """The version of the system's nf_tables iptables (xtables-nft-multi), if any."""
    try:
        out = subprocess.run([SYSTEM_MULTI, "iptables", "-V"], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.match(r"iptables v(\S+) \(nf_tables\)", out)
    return m.group(1) if m else None


def _system_build(version: str) -> Path:
    """Wrappers for the system's xtables-nft-multi, as scripts/iptables-versions writes them."""
    bindir = cache_dir() / version / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    for applet in APPLETS + ("arptables", "arptables-save", "ebtables", "ebtables-save"):
        path = bindir / applet
        text = (f"#!/bin/sh\n# {applet} {version}: the system's {SYSTEM_MULTI}; written by "
                f"scripts/iptables-versions\nexec {SYSTEM_MULTI} {applet} \"$@\"\n")
        if not path.is_file() or path.read_text() != text:
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(text)
            tmp.chmod(0o755)
            tmp.replace(path)
    return bindir


def builds() -> dict[str, str]:
    """Version ("1.8.9", "1.8.11", ...) -> directory holding that version's iptables,
    ip6tables, iptables-save, ip6tables-save, iptables-restore, ip6tables-restore;
    oldest first. Trees count only once scripts/iptables-versions finished them."""
    found: dict[str, str] = {}
    system = system_version()
    if system:
        found[system] = str(_system_build(system))
    root = cache_dir()
    if root.is_dir():
        for tree in root.iterdir():
            if (tree.name not in found and re.fullmatch(r"\d+(\.\d+)+", tree.name)
                    and (tree / ".complete").is_file() and _usable(tree / "bin")):
                found[tree.name] = str(tree / "bin")
    return dict(sorted(found.items(), key=lambda kv: _vkey(kv[0])))


def build(version: str) -> str | None:
    """The bin/ directory of one version, or None if it is not provided here."""
    return builds().get(version)


if __name__ == "__main__":
    for v, d in builds().items():
        print(v, d)
