"""Which iptables k3s runs, asked before every compat probe (an upgrade may replace the
binaries under a running guard). Light to import: what it asks (the host's files, the
binaries' versions) is loaded when first asked, not at start."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..compat.binaries import Binary
    from ..compat.impact import Setup
    from ..config import Config


@dataclass(frozen=True)
class K3sIptables:
    """The iptables binaries to judge for (each with its version), how they were found,
    and which k3s components run (from k3s's flags and config)."""
    binaries: tuple["Binary", ...] = ()
    notes: tuple[str, ...] = ()
    setup: "Setup | None" = None


def k3s_iptables(setting: str, override: str | None = None) -> K3sIptables:
    """--iptables PATH (override), else compat.iptables PATH (setting), else (auto) the
    ones k3s runs."""
    from ..compat.binaries import k3s_setup
    from .iptables import binaries_for, read_host
    host = read_host()
    binaries, notes = binaries_for(setting, override, view=host)
    return K3sIptables(binaries, notes, k3s_setup(host))


def configured(config: "Config") -> K3sIptables:
    """The ones the config's compat.iptables names (auto: the ones k3s runs)."""
    return k3s_iptables(config.compat.iptables)


def unasked(config: "Config") -> K3sIptables:
    """None: the reader judges for every modelled version (the demo, the tests)."""
    return K3sIptables()
