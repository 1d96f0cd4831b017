"""The compat probe wired into the gate and the CLI (placeholder until the analyser lands)."""
from __future__ import annotations

from .daemon import CompatOutcome


def compat_hook(config, log, args):
    return lambda sock: CompatOutcome()


def compat_report(sock, config, netns) -> dict:
    return {"ok": True, "managed_tables": [], "incompatible": []}
