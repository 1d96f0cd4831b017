"""`fwgate check`: every stage and the compat probe once, without waiting."""
from __future__ import annotations

from . import model
from .adapters import nft
from .adapters.nfnl import NfSocket
from .config import ChainExists, Condition, Config, LinkUp, TableExists, UnitActive
from .errors import EnvironmentProblem
from .pipeline import Facts, evaluate


def describe(cond: Condition) -> str:
    if isinstance(cond, UnitActive):
        return f"unit {cond.unit} active"
    if isinstance(cond, LinkUp):
        return f"link {cond.link} up"
    if isinstance(cond, TableExists):
        return f"table {cond.table}"
    assert isinstance(cond, ChainExists)
    extra = "".join(f" {k} {getattr(cond, k)}" for k in ("iifname", "oifname") if getattr(cond, k))
    return f"chain {cond.table} {cond.chain}{extra}"


def gather(config: Config, sock: NfSocket) -> tuple[Facts, dict[str, str]]:
    """Current facts, and per-unit errors when systemd cannot be asked."""
    conditions = [c for s in config.stages for c in s.conditions]
    facts, unit_errors = Facts(), {}
    if any(isinstance(c, LinkUp) for c in conditions):
        from .adapters.links import LinkWatch
        links = LinkWatch()
        facts.links = links.links
        links.close()
    units = [c.unit for c in conditions if isinstance(c, UnitActive)]
    if units:
        try:
            from .adapters.units import UnitWatch
            watch = UnitWatch(units)
            facts.units = dict(watch.states)
            watch.close()
        except EnvironmentProblem as exc:
            unit_errors = {u: str(exc) for u in units}
    facts.snapshot = nft.snapshot(sock, config.tables_of_interest())
    return facts, unit_errors


def check(config: Config, netns: str | None = None) -> dict:
    from .gatecompat import compat_report
    with NfSocket() as sock:
        facts, unit_errors = gather(config, sock)
        stages, all_ok = [], True
        for i, stage in enumerate(config.stages):
            conds = []
            for cond in stage.conditions:
                holds, waiting = evaluate(cond, facts)
                detail = unit_errors.get(getattr(cond, "unit", None)) or ("" if holds else waiting)
                conds.append({"condition": describe(cond), "ok": holds, "detail": detail})
            ok = all(c["ok"] for c in conds)
            all_ok &= ok
            stages.append({"index": i + 1, "name": stage.name, "ok": ok, "conditions": conds})
        compat = compat_report(sock, config, netns)
    snap = facts.snapshot
    incompatible = not compat["ok"]
    exit_code = 1 if not all_ok else (3 if incompatible and config.compat.on_incompatible == "fail" else 0)
    return {"ok": exit_code == 0, "exit_code": exit_code, "stages": stages,
            "genid": snap.genid, "digest": model.digest(snap, config.watch),
            "watch": [str(t) for t in config.watch], "compat": compat}


def render(report: dict) -> str:
    lines = []
    total = len(report["stages"])
    for stage in report["stages"]:
        lines.append(f"stage {stage['index']}/{total} {stage['name']}: "
                     f"{'ok' if stage['ok'] else 'NOT YET'}")
        for cond in stage["conditions"]:
            mark = "ok " if cond["ok"] else "-- "
            lines.append(f"  {mark}{cond['condition']}" + (f": {cond['detail']}" if cond["detail"] else ""))
    lines.append(f"rules: genid {report['genid']}, digest {report['digest'][:16]} "
                 f"over {', '.join(report['watch'])}")
    compat = report["compat"]
    if compat["ok"]:
        lines.append("compat: iptables-nft can read every rule")
    else:
        lines.append(f"compat: {len(compat['incompatible'])} rule(s) iptables-nft cannot read:")
        for bad in compat["incompatible"]:
            tag = f" ({bad['userdata']})" if bad.get("userdata") else ""
            lines.append(f"  {bad['family']} {bad['table']} {bad['chain']} handle {bad['handle']}"
                         f"{tag}: {bad['reason']}")
    lines.append("result: " + {0: "all good", 1: "a stage does not hold yet",
                               3: "incompatible rules (compat.on_incompatible: fail)"}[report["exit_code"]])
    return "\n".join(lines)
