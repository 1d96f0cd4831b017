"""What systemd and the filesystem say about Netbird's iptables: the facts behind
fwgate.netbird.explain_fallback() and fwgate.netbird.prevention()."""
from __future__ import annotations

import os

from ..errors import EnvironmentProblem
from ..netbird import IptablesOnPath, NetbirdEnvironment
from .iptables import mode_of
from .systemd import service_environment

NETBIRD_UNIT = "netbird.service"


def netbird_environment(unit: str = NETBIRD_UNIT) -> NetbirdEnvironment:
    try:
        installed, env, source = service_environment(unit)
    except EnvironmentProblem as exc:
        return NetbirdEnvironment(unit, None, "", error=str(exc))
    path = env.get("PATH", "")
    found = []
    for directory in path.split(":"):
        candidate = os.path.join(directory, "iptables")
        if directory and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            found.append(IptablesOnPath(candidate, mode_of(candidate)))
    disabled = env.get("NB_DISABLE_FIREWALL", "").strip().lower() in ("1", "true", "yes")
    return NetbirdEnvironment(unit, path, source, tuple(found), installed=installed,
                              firewall_disabled=disabled)
