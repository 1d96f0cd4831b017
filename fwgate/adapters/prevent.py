"""`fwgate prevent`: give netbird.service an nf_tables iptables on its PATH, reversibly.

Netbird writes its ip filter rules through the first `iptables` on its PATH; with none
it writes them natively, in the form k3s's iptables cannot read. Where Debian's
iptables cannot be installed (or its alternative is legacy), this puts a directory
of links to an nf_tables iptables first on netbird.service's PATH (a drop-in), and
`--undo` takes both away again.
"""
from __future__ import annotations

import glob
import os
import shutil
from dataclasses import replace

from ..compat.binaries import asked as named_binary
from ..errors import EnvironmentProblem, FwgateError
from .iptables import version_of
from .netbird import NETBIRD_UNIT
from .systemd import DEFAULT_SERVICE_PATH, daemon_reload

LINKS_DIR = "/var/lib/fwgate/netbird-iptables"
DROPIN = f"/etc/systemd/system/{NETBIRD_UNIT}.d/50-fwgate-iptables.conf"
NAMES = ("iptables", "iptables-save", "iptables-restore",
         "ip6tables", "ip6tables-save", "ip6tables-restore")
# In preference order: Debian's nf_tables iptables (present even when the alternative
# points at legacy), then k3s's bundled static one (k3s-root: bin/aux/xtables-nft-multi;
# `current` follows k3s upgrades).
CANDIDATES = ("/usr/sbin/xtables-nft-multi",
              "/var/lib/rancher/k3s/data/current/bin/aux/xtables-nft-multi")
K3S_DATA_GLOB = "/var/lib/rancher/k3s/data/*/bin/aux/xtables-nft-multi"


def _reads_nftables(path: str) -> bool:
    """Is it an nf_tables multi-call binary? Asked as the links will call it: by the
    name `iptables` (a multi-call binary picks its job by the name it is run as)."""
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        return False
    as_iptables = replace(named_binary(path, "fwgate prevent"), argv=(path, "iptables"))
    return version_of(as_iptables).mode == "nf_tables"


def find_nft_iptables(asked: str | None = None) -> str:
    """An nf_tables multi-call iptables binary (xtables-nft-multi)."""
    found = [asked] if asked else [*CANDIDATES, *sorted(glob.glob(K3S_DATA_GLOB))]
    for path in found:
        if _reads_nftables(path):
            return path
    if asked:
        raise FwgateError(f"--iptables {asked}: not an nf_tables multi-call iptables "
                          f"(`{asked} iptables --version` must say nf_tables)")
    raise EnvironmentProblem("no nf_tables iptables on this node to give Netbird (looked at "
                             f"{', '.join(CANDIDATES)} and k3s's data directories): install "
                             "Debian's iptables package, or start k3s once, then try again")


def dropin_text(links_dir: str, path: str) -> str:
    return ("# Written by `fwgate prevent`: Netbird finds an nf_tables iptables first on its\n"
            "# PATH and writes its ip filter rules through it, never natively.\n"
            "# `fwgate prevent --undo` removes this file.\n"
            f"[Service]\nEnvironment=PATH={links_dir}:{path}\n")


def install(binary: str, path: str | None) -> list[str]:
    """Links and drop-in in place, systemd reloaded. The files written."""
    base = path or DEFAULT_SERVICE_PATH
    base = ":".join(d for d in base.split(":") if d and d != LINKS_DIR)
    tmp = LINKS_DIR + ".new"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp, mode=0o755)
    for name in NAMES:
        os.symlink(binary, os.path.join(tmp, name))
    shutil.rmtree(LINKS_DIR, ignore_errors=True)
    os.replace(tmp, LINKS_DIR)
    os.makedirs(os.path.dirname(DROPIN), mode=0o755, exist_ok=True)
    with open(DROPIN + ".new", "w") as fh:
        fh.write(dropin_text(LINKS_DIR, base))
    os.chmod(DROPIN + ".new", 0o644)
    os.replace(DROPIN + ".new", DROPIN)
    daemon_reload()
    return [LINKS_DIR, DROPIN]


def uninstall() -> list[str]:
    """Both taken away again, systemd reloaded. The files removed."""
    gone = [p for p in (DROPIN, LINKS_DIR) if os.path.lexists(p)]
    if os.path.lexists(DROPIN):
        os.unlink(DROPIN)
        try:
            os.rmdir(os.path.dirname(DROPIN))
        except OSError:
            pass  # other drop-ins live there
    shutil.rmtree(LINKS_DIR, ignore_errors=True)
    if gone:
        daemon_reload()
    return gone
