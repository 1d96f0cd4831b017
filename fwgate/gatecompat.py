"""The compat probe wired into the gate and the CLI: policy and reporting at the edge."""
from __future__ import annotations

import json

from .adapters.journal import Log
from .adapters.nfnl import NfSocket
from .compat.analyser import CompatReport, Finding
from .compat.iptables import compare, cross_check, find_iptables, managed
from .compat.probe import probe_json, take_report
from .compat.repair import RepairConflict, apply_repairs, repair_json
from .config import Config
from .daemon import CompatHook, CompatOutcome
from .errors import EXIT_INCOMPATIBLE
from .model import Rule


def rule_ref(r: Rule) -> str:
    """How a person finds the rule: `ip filter FORWARD handle 11 (frwacceptoif)`."""
    tag = f" ({r.userdata_text()})" if r.userdata_text() else ""
    return f"{r.family} {r.table} {r.chain} handle {r.handle}{tag}"


def finding_line(f: Finding) -> str:
    return f"{rule_ref(f.rule)}: {f.reason}"


def _binary(config: Config, override: str | None = None) -> str | None:
    return find_iptables(override or config.compat.iptables)


def _second_opinion(binary: str | None, netns: str | None, snap, report: CompatReport,
                    log: Log) -> list[str]:
    """Run the real iptables too; where it fails and the analyser did not, believe it."""
    if not binary:
        return []
    verdict = cross_check(binary, netns, managed(snap.tables, report))
    if verdict.version is None:
        # e.g. k3s's bundled iptables before k3s first ran: its detect wrapper cannot
        # set itself up in our read-only sandbox. Its silence proves nothing.
        log.warning(f"compat: {binary} does not run (--version failed); relying on the analyser")
        return []
    refused = {(c.family, c.table, c.chain) for c in verdict.refused_chains}
    predicted = {(f.rule.family, f.rule.table, f.rule.chain) for f in report.findings}
    missed = []
    for d in compare(report, verdict):
        where = f"{d.family} {d.table}" + (f" {d.chain}" if d.chain else "")
        line = f"{where}: analyser says {d.analyser}, {binary} says {d.iptables}"
        log.warning(f"compat: analyser and iptables disagree: {line}")
        if (d.family, d.table, d.chain) in refused and (d.family, d.table, d.chain) not in predicted:
            missed.append(line)
    return missed


def compat_hook(config: Config, log: Log, args) -> CompatHook:
    """What the gate runs once every stage has settled."""
    binary = _binary(config)  # a missing binary is an environment error at start, not later
    netns = getattr(args, "netns", None)
    repair = config.compat.on_incompatible == "repair"

    def run(sock: NfSocket) -> CompatOutcome:
        if repair:
            try:
                result = apply_repairs(sock)
            except RepairConflict as exc:
                log.warning(f"compat: {exc}; settling again")
                return CompatOutcome(resettle=True)
            lines = [f"{rule_ref(f.rule)}: was {f.reason}; now {f.equivalent.text}"
                     for f in result.repaired]
            for line in lines:
                log.info(f"compat: repaired {line}")
            if lines:
                return CompatOutcome([], lines)
        snap, report = take_report(sock)
        incompatible = [finding_line(f) for f in report.findings]
        for line in incompatible:
            log.warning(f"compat: iptables-nft cannot read {line}")
        incompatible += _second_opinion(binary, netns, snap, report, log)
        return CompatOutcome(incompatible)

    return run


def compat_report(sock: NfSocket, config: Config, netns: str | None) -> dict:
    return probe_json(sock, _binary(config), netns)


def run_compat_command(config: Config, args) -> int:
    with NfSocket() as sock:
        report = probe_json(sock, _binary(config, args.iptables), getattr(args, "netns", None))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render_compat(report))
    disagree = report.get("iptables", {}).get("disagreements")
    return EXIT_INCOMPATIBLE if not report["ok"] or disagree else 0


def render_compat(report: dict) -> str:
    tables = ", ".join(f"{t['family']} {t['table']}" for t in report["managed_tables"]) or "none"
    lines = [f"iptables-managed tables: {tables}"]
    if report["ok"]:
        lines.append("every rule in them is one iptables-nft can read")
    for bad in report["incompatible"]:
        tag = f" ({bad['userdata']})" if bad.get("userdata") else ""
        fix = "repairable: fwgate repair" if bad.get("repairable") else "no known equivalent"
        lines.append(f"{bad['family']} {bad['table']} {bad['chain']} handle {bad['handle']} "
                     f"position {bad['position']}{tag}: {bad['reason']} [{fix}]")
    cross = report.get("iptables")
    if cross:
        lines.append(f"{cross.get('binary')}: " + ("agrees" if not cross.get("disagreements")
                                                   else "DISAGREES:"))
        for d in cross.get("disagreements", []):
            lines.append(f"  {json.dumps(d)}")
    return "\n".join(lines)


def run_repair_command(config: Config, args) -> int:
    with NfSocket() as sock:
        result = apply_repairs(sock, dry_run=args.dry_run)
    report = repair_json(result)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        verb = "would re-encode" if args.dry_run else "re-encoded"
        for r in report["repaired"]:
            tag = f" ({r['userdata']})" if r.get("userdata") else ""
            print(f"{verb} {r['family']} {r['table']} {r['chain']} handle {r['handle']}{tag}: "
                  f"{r['reason']}; now {r['now']}")
        for f in report["left"]:
            print(f"left alone {f['family']} {f['table']} {f['chain']} handle {f['handle']}: "
                  f"{f['reason']} (no known equivalent)")
        if not report["repaired"] and not report["left"]:
            print("nothing to repair: iptables-nft can read every rule")
    return EXIT_INCOMPATIBLE if report["left"] else 0
