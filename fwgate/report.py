"""What the commands print: one JSON shape and one text form per command, one
formatter for rules and findings. Pure: results in, dicts and text out."""
from __future__ import annotations

import time

from .compat.crosscheck import verdict_json
from .compat.policy import ProbeResult, Verdict
from .compat.reader import finding_json, report_json
from .compat.repair import Repair
from .netbird import NetbirdRules
from .state import State


def repair_json(r: Repair) -> dict:
    rule = r.rule
    return {"family": rule.family, "table": rule.table, "chain": rule.chain,
            "handle": rule.handle, "position": rule.position, "userdata": rule.userdata_text(),
            "reason": r.reason, "now": r.equivalent.text}


def verdict_dict(verdict: Verdict, on_incompatible: str) -> dict:
    return {"exit_code": verdict.exit_code, "policy": on_incompatible,
            "summary": verdict.summary, "blocking": list(verdict.blocking),
            "warnings": list(verdict.warnings), "resolved": list(verdict.resolved)}


def netbird_json(rules: NetbirdRules | None, explanation: tuple[str, ...] = ()) -> dict | None:
    if rules is None:
        return None
    return {"native_rules": [r.ref for r in rules.native],
            "untagged_copies": rules.untagged_copies,
            "explanation": list(explanation)}


def compat_json(result: ProbeResult, verdict: Verdict, on_incompatible: str,
                explanation: tuple[str, ...] = ()) -> dict:
    """DESIGN section 3's `fwgate compat --json` object, and what fwgate makes of it."""
    out = report_json(result.report)
    if result.crosschecks:
        check = result.crosschecks[0]
        out["iptables"] = verdict_json(check.verdict, check.disagreements)
    out["verdict"] = verdict_dict(verdict, on_incompatible)
    out["netbird"] = netbird_json(result.netbird, explanation)
    return out


# --- text -------------------------------------------------------------------------

def finding_text(bad: dict) -> str:
    tag = f" ({bad['userdata']})" if bad.get("userdata") else ""
    return (f"{bad['family']} {bad['table']} {bad['chain']} handle {bad['handle']} "
            f"position {bad['position']}{tag}: {bad['reason']}")


def compat_text(report: dict) -> str:
    tables = ", ".join(f"{t['family']} {t['table']}" for t in report["managed_tables"]) or "none"
    lines = [f"iptables-managed tables: {tables}"]
    if report["ok"]:
        lines.append("every rule in them is one iptables-nft can read")
    for bad in report["incompatible"]:
        fix = "repairable: fwgate repair" if bad.get("repairable") else "no known equivalent"
        lines.append(f"{finding_text(bad)} [{fix}]")
    for wrong in report.get("misread", []):
        lines.append(f"misread: {finding_text(wrong)}")
    cross = report.get("iptables")
    if cross:
        lines.append(f"{cross.get('binary')}: " + ("agrees" if not cross.get("disagreements")
                                                   else "DISAGREES:"))
        for d in cross.get("disagreements", []):
            where = f"{d['family']} {d['table']}" + (f" {d['chain']}" if d.get("chain") else "")
            lines.append(f"  {where}: reader says {d['analyser']}, binary says {d['iptables']}")
    lines += netbird_text(report.get("netbird"))
    return "\n".join(lines)


def netbird_text(netbird: dict | None) -> list[str]:
    if not netbird:
        return []
    lines = []
    if netbird["native_rules"]:
        lines.append(f"netbird: {len(netbird['native_rules'])} native rule(s): "
                     f"{', '.join(netbird['native_rules'])}")
        lines += [f"  {line}" for line in netbird["explanation"]]
    if netbird["untagged_copies"]:
        lines.append(f"netbird: {netbird['untagged_copies']} untagged copies of its accept rules "
                     f"(left by kube-router's restores; reported, not deleted)")
    return lines


def check_text(report: dict) -> str:
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
    verdict = compat["verdict"]
    lines.append(f"compat ({verdict['policy']}): {verdict['summary']}")
    for line in verdict["blocking"]:
        lines.append(f"  blocks: {line}")
    for line in verdict["warnings"]:
        lines.append(f"  warns: {line}")
    for line in verdict["resolved"]:
        lines.append(f"  repairs: {line}")
    lines += netbird_text(compat.get("netbird"))
    lines.append("result: " + {0: "all good", 1: "a stage does not hold yet",
                               3: "incompatible rules nothing can repair"}[report["exit_code"]])
    return "\n".join(lines)


def repair_text(report: dict) -> str:
    verb = "would re-encode" if report["dry_run"] else "re-encoded"
    lines = []
    for r in report["repaired"]:
        tag = f" ({r['userdata']})" if r.get("userdata") else ""
        lines.append(f"{verb} {r['family']} {r['table']} {r['chain']} handle {r['handle']}{tag}: "
                     f"{r['reason']}; now {r['now']}")
    for f in report["left"]:
        lines.append(f"left alone {f['family']} {f['table']} {f['chain']} handle {f['handle']}: "
                     f"{f['reason']} (no known equivalent)")
    if not report["repaired"] and not report["left"]:
        lines.append("nothing to repair: iptables-nft can read every rule")
    return "\n".join(lines)


def repair_report(result: ProbeResult, dry_run: bool) -> dict:
    return {"dry_run": dry_run, "conflict": result.conflict, "attempts": result.attempts,
            "repaired": [repair_json(r) for r in (result.planned if dry_run else result.repaired)],
            "left": [finding_json(f) for f in result.left]}


def status_text(state: State, alive: bool, path: str) -> str:
    def when(t):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "never"

    running = f"running (pid {state.pid})" if alive else \
        f"not running (pid {state.pid} {'exited' if state.phase != 'stopped' else 'was stopped'})"
    where = f" in network namespace {state.netns}" if state.netns else ""
    lines = [f"fwgate {state.role}: {running}, {state.phase}{where}",
             f"status: {state.status}",
             f"ready: {when(state.ready_at)}",
             "stages: " + (", ".join(f"{k} {v:g}s" for k, v in state.stage_seconds.items())
                           or "none settled"),
             f"rules: genid {state.genid}, digest {(state.digest or '')[:16]}, "
             f"{state.changes_total} change(s), last {when(state.last_change_at)}, "
             f"{state.resyncs_total} resync(s)",
             "compat: " + ("not checked yet" if state.compat_checked_at is None else
                           f"checked {when(state.compat_checked_at)}: " +
                           ("iptables-nft reads every rule" if not state.incompatible else
                            f"{len(state.incompatible)} unreadable: {state.incompatible[0]}")),
             f"repairs: {state.repairs_total}"]
    lines += [f"  {when(r['at'])} {r['rule']}" for r in state.repairs[-5:]]
    if state.netbird_fallback:
        lines.append("netbird: " + " ".join(state.netbird_fallback))
    if state.netbird_untagged_copies:
        lines.append(f"netbird: {state.netbird_untagged_copies} untagged copies of its accept rules")
    lines.append(f"(from {path}, written {when(state.updated_at)})")
    return "\n".join(lines)
