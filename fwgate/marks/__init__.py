"""Packet-mark conflicts between the components that share a node's nf_tables. Pure.

    from fwgate.marks import find_conflicts, conflicts_json, conflict_text
    conflicts = find_conflicts(snapshot)   # a Snapshot of the ip, ip6 and inet tables
"""
from .conflicts import (
    Conflict, Side, conflict_json, conflict_text, conflicts_json, find_conflicts, harms,
)

__all__ = ["Conflict", "Side", "conflict_json", "conflict_text", "conflicts_json",
           "find_conflicts", "harms"]
