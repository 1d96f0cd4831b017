"""What the commands print: one JSON shape and one text form per command, one
formatter for rules and findings. Pure: results in, dicts and text out."""
from __future__ import annotations

import time

from .compat.binaries import Binary
from .compat.crosscheck import verdict_json
from .compat.equivalents import iptables_equivalent
from .compat.impact import KUBE_ROUTER, Impact
from .compat.policy import ProbeResult, Verdict
from .compat.reader import CompatReport, Finding
from .compat.repair import Repair
from .netbird import NetbirdRules


# --- the compat report's JSON --------------------------------------------------------

def impact_json(i: Impact) -> dict:
    return {"component": i.component, "command": i.command, "fatal": i.fatal, "effect": i.effect}


def finding_json(f: Finding, binaries: dict[str, list[str]] | None = None) -> dict:
    """One finding; binaries: version -> the binaries (paths) of that version."""
    r = f.rule
    first = next((i for i in f.impacts if i.fatal), f.impacts[0] if f.impacts else None)
    if first is None and f.after_sync:
        first = Impact(KUBE_ROUTER, "iptables-save -t filter | iptables-restore -T filter",
                       False, f.after_sync)
    on = [b for v in f.versions for b in (binaries or {}).get(v, [])]
    out = {"family": r.family, "table": r.table, "chain": r.chain, "handle": r.handle,
           "position": r.position, "userdata": r.userdata_text(),
           "expressions": r.expr_names, "reason": f.reason, "repairable": f.repairable,
           "blocking": f.blocking, "breaks": list(f.breaks), "iptables_error": f.iptables_error,
           "unlisted": f.unlisted, "uncertain": f.uncertain,
           "component": first.component if first else None,
           "command": first.command if first else None,
           "binary": on[0] if on else None, "binaries": on, "versions": list(f.versions),
           "impacts": [impact_json(i) for i in f.impacts],
           "after_sync": f.after_sync}
    if f.kind:
        out["kind"] = f.kind
        out["written_back"] = f.written_back
    if f.repairable:
        equivalent = iptables_equivalent(r)
        out["equivalent"] = equivalent.text if equivalent else None
    return out


def report_json(report: CompatReport, binaries: dict[str, list[str]] | None = None) -> dict:
    """`fwgate compat --json`, DESIGN section 3's shape: `incompatible` holds what kills k3s; what only breaks
    calls that are logged and retried, or nothing k3s runs, is `not_blocking`; rules
    read wrongly are `misread`; base chains iptables never sees, `dropped_chains`."""
    blocking = [f for f in report.findings if f.blocking]
    return {
        "ok": not blocking,
        "managed_tables": [{"family": t.family, "table": t.name} for t in report.managed_tables],
        "incompatible": [finding_json(f, binaries) for f in blocking],
        "not_blocking": [finding_json(f, binaries) for f in report.findings if not f.blocking],
        "misread": [finding_json(f, binaries) for f in report.misread],
        "unlistable_chains": [{"family": c.family, "table": c.table, "chain": c.chain}
                              for c in report.unlistable_chains],
        "dropped_chains": [{"family": d.family, "table": d.table, "chain": d.chain,
                            "why": d.why, "rules": d.rules, "after_sync": d.after_sync}
                           for d in report.dropped_chains],
        "unnamed_tables": [{"family": t.family, "table": t.name} for t in report.unnamed_tables],
        "versions": list(report.versions),
    }


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


def binary_json(b: Binary) -> dict:
    return {"path": b.path, "version": b.version, "mode": b.mode, "source": b.source,
            "role": b.role, "why": b.why, "label": b.label,
            "profile": b.profile.version if b.profile else None}


def _by_version(result: ProbeResult) -> dict[str, list[str]]:
    """version -> the binaries it is the reader of, for each finding's `binary`."""
    out: dict[str, list[str]] = {}
    for b in result.binaries:
        if b.profile is not None and b.reads_nftables:
            out.setdefault(b.profile.version, []).append(b.label)
    if not out:  # none known: each version stands for itself
        out = {v: [f"iptables {v} (no binary known)"] for v in result.report.versions}
    return out


def compat_json(result: ProbeResult, verdict: Verdict, on_incompatible: str,
                explanation: tuple[str, ...] = ()) -> dict:
    """DESIGN section 3's `fwgate compat --json` object, and what fwgate makes of it:
    `incompatible` holds what k3s dies on; `not_blocking` and `misread` the rest;
    `binaries` the iptables judged for and how k3s finds them."""
    out = report_json(result.report, _by_version(result))
    out["binaries"] = [binary_json(b) for b in result.binaries]
    out["binary_notes"] = list(result.notes)
    checks = [verdict_json(c.verdict, c.disagreements, c.binary) for c in result.crosschecks]
    if checks:
        out["iptables"] = checks[0]
        out["crosschecks"] = checks
    out["verdict"] = verdict_dict(verdict, on_incompatible)
    out["netbird"] = netbird_json(result.netbird, explanation)
    return out


# --- text -------------------------------------------------------------------------

def finding_text(bad: dict) -> str:
    tag = f" ({bad['userdata']})" if bad.get("userdata") else ""
    return (f"{bad['family']} {bad['table']} {bad['chain']} handle {bad['handle']} "
            f"position {bad['position']}{tag}: {bad['reason']}")


def _impact_text(bad: dict) -> str:
    fatal = next((i for i in bad.get("impacts", []) if i["fatal"]), None)
    if fatal:
        return f"{fatal['component']} dies on `{fatal['command']}`"
    names = ", ".join(dict.fromkeys(i["component"] for i in bad.get("impacts", [])))
    return f"breaks {names} (logged, retried)" if names else "no k3s component reads it"


def compat_text(report: dict) -> str:
    tables = ", ".join(f"{t['family']} {t['table']}" for t in report["managed_tables"]) or "none"
    lines = [f"iptables-managed tables: {tables}"]
    for b in report.get("binaries", []):
        lines.append(f"judged for {b['label']}: {b['role']}, {b['why']}")
    if not report.get("binaries"):
        lines.append(f"judged for every modelled iptables version: {', '.join(report['versions'])}")
    lines += [f"  {note}" for note in report.get("binary_notes", [])]
    if report["ok"] and not report.get("not_blocking") and not report.get("misread"):
        lines.append("every rule in them is one iptables-nft can read")
    elif report["ok"]:
        lines.append("nothing in them kills k3s")
    for bad in report["incompatible"]:
        fix = "repairable: fwgate repair" if bad.get("repairable") else "no known equivalent"
        lines.append(f"BLOCKS: {finding_text(bad)} [{fix}]")
        lines.append(f"  {_impact_text(bad)}, on {bad.get('binary') or 'every version'}")
    for bad in report.get("not_blocking", []):
        lines.append(f"warns: {finding_text(bad)}")
        lines.append(f"  {_impact_text(bad)}, on {bad.get('binary') or 'every version'}")
        if bad.get("after_sync"):
            lines.append(f"  {bad['after_sync']}")
    for wrong in report.get("misread", []):
        lines.append(f"misread: {finding_text(wrong)}")
        if wrong.get("after_sync"):
            lines.append(f"  {wrong['after_sync']}")
    for d in report.get("dropped_chains", []):
        lines.append(f"dropped: {d['family']} {d['table']} {d['chain']} ({d['rules']} rules): "
                     f"iptables never sees it: {d['why']}")
        if d.get("after_sync"):
            lines.append(f"  {d['after_sync']}")
    for t in report.get("unnamed_tables", []):
        lines.append(f"unnamed: {t['family']} {t['table']}: iptables has no name for it "
                     f"(in some or all versions), no command reads it")
    for cross in report.get("crosschecks", []):
        lines.append(f"{cross.get('binary')}: " + (
            "ruleset changed while it ran: not compared" if cross.get("moved") else
            "agrees" if not cross.get("disagreements") else "DISAGREES:"))
        for d in cross.get("disagreements", []):
            lines.append(f"  `{d['command']}`: reader says {d['analyser']}, binary {d['iptables']}")
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
        if stage.get("skipped"):
            lines.append(f"stage {stage['index']}/{total} {stage['name']}: skipped: "
                         f"{stage['skipped']}")
            continue
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
    for b in compat.get("binaries", []):
        lines.append(f"  for {b['label']}: {b['role']}, {b['why']}")
    if not compat.get("binaries"):
        lines.append(f"  for every modelled iptables version ({', '.join(compat['versions'])})")
    for line in verdict["blocking"]:
        lines.append(f"  blocks: {line}")
    for line in verdict["warnings"]:
        lines.append(f"  warns: {line}")
    for line in verdict["resolved"]:
        lines.append(f"  repairs: {line}")
    lines += netbird_text(compat.get("netbird"))
    marks = report.get("marks", [])
    shared = report.get("marks_shared", 0)
    lines.append((f"marks: {len(marks)} packet-mark conflict(s) that harm packets" if marks else
                  "marks: no packet-mark conflict harms a packet") +
                 (f" ({shared} shared without harm: fwgate conflicts --all)" if shared else ""))
    lines += [f"  {c['mark']} {c['bits']}: {c['writer']['owner']} {c['writer']['family']} "
              f"{c['writer']['table']} {c['writer']['chain']} → {c['reader']['owner']} "
              f"{c['reader']['family']} {c['reader']['table']} {c['reader']['chain']}: "
              f"{c['effect']}" for c in marks]
    prevention = report.get("prevention")
    if prevention:
        lines.append(f"prevention: {'in force' if prevention['in_force'] else 'NOT in force'}: "
                     f"{prevention['why']}")
    exposed = prevention is not None and not prevention["in_force"]
    lines.append("result: " + {
        0: "ok for now, relying on repair alone" if exposed else "all good",
        1: "a stage does not hold yet",
        3: "k3s dies on a rule in the ruleset now (see blocks)"}[report["exit_code"]])
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
    for ref in report.get("removed", []):
        lines.append(f"deleted {ref}: a dead copy of Netbird's accept rule (after an identical "
                     f"rule: no packet reached it)")
    if not report["repaired"] and not report["left"] and not report.get("removed"):
        lines.append("nothing to repair: iptables-nft can read every rule")
    return "\n".join(lines)


def repair_report(result: ProbeResult, dry_run: bool) -> dict:
    return {"dry_run": dry_run, "conflict": result.conflict, "attempts": result.attempts,
            "repaired": [repair_json(r) for r in (result.planned if dry_run else result.repaired)],
            "left": [finding_json(f) for f in result.left],
            "removed": [r.ref for r in result.removed]}


def repair_exit_blocking(result: ProbeResult) -> bool:
    """Rules left that k3s dies on."""
    return any(f.blocking for f in result.left)


def _judged_for(role: dict) -> str:
    """` for /usr/sbin/iptables (1.8.9, nf_tables)`: the binaries the verdict is for."""
    if not role.get("compat_binaries"):
        versions = role.get("compat_versions")
        return f" for iptables {', '.join(versions)}" if versions else ""
    return " for " + ", ".join(f"{b['path']} ({', '.join(x for x in (b.get('version'), b.get('mode')) if x)})"
                               for b in role["compat_binaries"])


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "never"


def _role_text(name: str, role: dict) -> list[str]:
    unit = role.get("unit")
    head = f"fwgate {name}"
    if unit:
        head += f" ({unit['name']}: {unit['active']}" + (f"/{unit['sub']}" if unit["sub"] else "") + \
            (f", {unit['result']}" if unit["result"] not in ("", "success") else "") + \
            (f", {unit['restarts']} restart(s)" if unit["restarts"] else "") + ")"
    if "pid" not in role:
        return [f"{head}: no state written since boot"]
    running = f"running (pid {role['pid']})" if role["running"] else f"not running (pid {role['pid']})"
    where = f" in network namespace {role['netns']}" if role.get("netns") else ""
    lines = [f"{head}: {running}, {role['phase']}{where}",
             f"  status: {role['status']}",
             f"  ready: {_when(role.get('ready_at'))}"]
    if name == "gate":  # in stage order: the state file keeps it
        lines.append("  stages: " + (", ".join(f"{k} {v:g}s" for k, v in role["stage_seconds"].items())
                                     or "none settled"))
    lines.append(f"  rules: genid {role['genid']}, {role['changes_total']} change(s), last "
                 f"{_when(role.get('last_change_at'))}, {role['resyncs_total']} resync(s)")
    checked = role.get("compat_checked_at")
    lines.append("  compat" + _judged_for(role) + ": " + (
        "not checked yet" if checked is None else
        f"checked {_when(checked)}: {len(role['incompatible'])} blocking, "
        f"{len(role['compat_warnings'])} warning(s)" +
        (f", {role['compat_disagreements']} disagreement(s) with a real iptables"
         if role["compat_disagreements"] else "")))
    lines += [f"    blocks: {line}" for line in role["incompatible"][:5]]
    lines += [f"    warns: {line}" for line in role["compat_warnings"][:5]]
    lines.append(f"  repairs: {role['repairs_total']}")
    lines += [f"    {_when(r['at'])} {r['rule']}" for r in role["repairs"][-5:]]
    if role.get("netbird_fallback"):
        lines.append("  netbird: " + " ".join(role["netbird_fallback"]))
    if role.get("netbird_untagged_copies"):
        lines.append(f"  netbird: {role['netbird_untagged_copies']} untagged copies of its "
                     f"accept rules")
    if role.get("mark_conflicts"):
        lines.append(f"  marks: {len(role['mark_conflicts'])} conflict(s)")
        lines += [f"    {c['text']}" for c in role["mark_conflicts"][:5]]
    lines.append(f"  config: {role.get('config_source') or 'unknown'}" +
                 (f" (the file is bad: {role['config_error']})" if role.get("config_error") else ""))
    lines.append(f"  (from {role['state_file']}, written {_when(role['updated_at'])})")
    return lines


def status_text(report: dict) -> str:
    """`fwgate status`: the verdict first, then what each role saw."""
    lines = [f"PROBLEM: {p}" for p in report["problems"]]
    lines += [f"warning: {w}" for w in report["warnings"]]
    prevention = report.get("prevention")
    if prevention and prevention["in_force"]:
        lines.append(f"prevention in force: {prevention['why']}")
    lines.append("result: " + ("all good" if report["ok"] else f"exit {report['exit_code']}"))
    for name in ("gate", "guard"):
        if report.get(name):
            lines += [""] + _role_text(name, report[name])
    return "\n".join(lines)
