"""Stage conditions: whether each holds on the facts, and words for it. Pure."""
from __future__ import annotations

from ..config import ChainExists, Condition, LinkUp, Stage, TableExists, UnitActive
from ..model import Facts

NOT_RUNNABLE = ("not-found", "masked")  # what systemd says of a unit that never starts


def _words(state: str) -> str:
    return "not installed" if state == "not-found" else state


def skipped(stage: Stage, facts: Facts) -> str | None:
    """Why the stage is skipped (its if_installed unit is not installed or masked), or
    None when it applies."""
    state = facts.units.get(stage.if_installed) if stage.if_installed else None
    if state in NOT_RUNNABLE:
        return f"{stage.if_installed} is {_words(state)}: nothing to wait for"
    return None


def evaluate(cond: Condition, facts: Facts) -> tuple[bool, str]:
    """Whether the condition holds, and what we wait for when it does not (or,
    for a condition that holds because its chain is absent, why)."""
    if isinstance(cond, UnitActive):
        state = facts.units.get(cond.unit)
        if state in NOT_RUNNABLE:
            return False, f"waiting for {cond.unit}, which is {_words(state)}"
        if state == "active":
            return True, ""
        return False, (f"waiting for {cond.unit} to become active"
                       + (f" (now {state})" if state else ""))
    if isinstance(cond, LinkUp):
        link = facts.links.get(cond.link)
        if link is None:
            return False, f"waiting for {cond.link} to appear"
        return link.up, "" if link.up else f"waiting for {cond.link} to come up"
    snap = facts.snapshot
    table = snap.table(cond.table) if snap else None
    if isinstance(cond, TableExists):
        return table is not None, f"waiting for table {cond.table}"
    assert isinstance(cond, ChainExists)
    where = f"{cond.table} {cond.chain}"
    if table is None or table.chain(cond.chain) is None:
        if cond.if_exists and snap is not None:
            return True, f"{where} does not exist: nothing to wait for"
        return False, f"waiting for chain {where}"
    if cond.iifname or cond.oifname:
        matches = [r.interface_matches() for r in table.rules_of(cond.chain)]  # once per rule
        for key in ("iifname", "oifname"):
            wanted = getattr(cond, key)
            if wanted and not any(wanted in m[key] for m in matches):
                return False, f"waiting for a rule matching {key} {wanted} in {where}"
    return True, ""


def describe(cond: Condition) -> str:
    if isinstance(cond, UnitActive):
        return f"unit {cond.unit} active"
    if isinstance(cond, LinkUp):
        return f"link {cond.link} up"
    if isinstance(cond, TableExists):
        return f"table {cond.table}"
    extra = "".join(f" with a rule matching {k} {getattr(cond, k)}"
                    for k in ("iifname", "oifname") if getattr(cond, k))
    when = " (if the chain exists)" if cond.if_exists else ""
    return f"chain {cond.table} {cond.chain}{extra}{when}"


def reads_rules(cond: Condition) -> bool:
    return isinstance(cond, (TableExists, ChainExists))
