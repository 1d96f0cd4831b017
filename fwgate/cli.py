"""Command line: the command bodies, and the one place errors become exit codes."""
from __future__ import annotations

import argparse
import json
import os
import sys

from . import __version__
from .config import DEFAULT_PATH, Config, ConfigError, LinkUp, defaults, load_config
from .errors import (EXIT_FAILED, EXIT_INCOMPATIBLE, EXIT_OK, EXIT_SOFTWARE, EnvironmentProblem,
                     FwgateError)

COMMANDS = {
    "run": "the boot gate: stages, settle, compat, then READY=1",
    "guard": "after boot: repair at once, re-check after every change, report; never gates",
    "check": "evaluate every stage and the compat probe once, without waiting",
    "compat": "list rules iptables-nft cannot read, and why",
    "repair": "re-encode known-incompatible rules so iptables-nft reads them",
    "status": "what the running (or last) gate and guard saw",
    "conflicts": "packet-mark bits one component changes that another tests later",
    "validate-config": "check a config file and say what it asks for",
    "prevent": "give netbird.service an nf_tables iptables, so it never writes the native rule",
    "demo": "the gate against a Netbird-like agent in a throw-away namespace",
}

EPILOG = """exit codes: 0 ready/all good; 1 timed out (on_timeout: fail) or a check
failed; 2 usage; 3 incompatible rules; 4 environment (permission, nf_tables,
netns, D-Bus); 70 internal error (a bug: retried); 78 bad config."""


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: an option given after the command must not be reset by the top level.
    common.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                        help=f"config file (default {DEFAULT_PATH})")
    common.add_argument("--netns", metavar="NAME", default=argparse.SUPPRESS,
                        help="work inside the network namespace /run/netns/NAME")
    parser = argparse.ArgumentParser(
        prog="fwgate", parents=[common], epilog=EPILOG,
        description="Hold k3s back until Netbird's nftables rules have settled and "
                    "iptables-nft can read them; then keep them readable.")
    parser.add_argument("--version", action="version", version=f"fwgate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    cmds = {name: sub.add_parser(name, parents=[common], help=text, description=text,
                                 epilog=EPILOG)
            for name, text in COMMANDS.items()}
    for name in ("check", "compat", "repair", "status", "conflicts", "validate-config"):
        cmds[name].add_argument("--json", action="store_true", help="print one JSON object")
    cmds["compat"].add_argument("--iptables", metavar="PATH",
                                help="judge for this iptables binary, in its version, and run "
                                     "what k3s runs with it (overrides compat.iptables and "
                                     "the resolution of the one k3s runs)")
    cmds["conflicts"].add_argument("--all", action="store_true",
                                   help="also bits shared without harm (an unknown owner, an "
                                        "intended cooperation)")
    cmds["compat"].add_argument("--verify", action="store_true",
                                help="also run the binary's iptables-save → iptables-restore "
                                     "round trip of each table in a scratch namespace (what "
                                     "kube-router's next sync does) and compare rule by rule "
                                     "(root; needs nft)")
    cmds["run"].add_argument("--watch", action="store_true",
                             help="stay running after READY and guard (after_ready: watch)")
    cmds["repair"].add_argument("--dry-run", action="store_true",
                                help="say what would be re-encoded; change nothing")
    cmds["validate-config"].add_argument("path", nargs="?", metavar="PATH",
                                         help="the file to check (default: --config)")
    cmds["validate-config"].add_argument("--quiet", action="store_true",
                                         help="print nothing when the file is good (the units' "
                                              "ExecReload: a bad file fails the reload)")
    cmds["prevent"].add_argument("--undo", action="store_true",
                                 help="take the drop-in and the links away again")
    cmds["prevent"].add_argument("--iptables", metavar="PATH",
                                 help="the nf_tables iptables (xtables-nft-multi) to link to "
                                      "(default: Debian's, else k3s's bundled one)")
    cmds["demo"].add_argument("--settle", default="3s",
                              help="quiet window for the demo (default 3s)")
    return parser


def _config(args) -> Config:
    path = getattr(args, "config", None)
    if path is None and not os.path.exists(DEFAULT_PATH):
        return defaults()  # every key is optional, so no file means the defaults
    return load_config(path or DEFAULT_PATH)


def _netns(args) -> str | None:
    return getattr(args, "netns", None)


def _enter_netns(args) -> None:
    if _netns(args):
        from .adapters.netns import enter
        enter(_netns(args))


def _k3s(config: Config, override: str | None = None):
    """(binaries, notes, setup): the iptables to judge for — --iptables PATH, else
    compat.iptables PATH, else (auto) the ones k3s runs, each with its version — how
    they were found, and which k3s components run (from k3s's flags and config)."""
    from .adapters.iptables import binaries_for, read_host
    from .compat.binaries import k3s_setup
    host = read_host()
    binaries, notes = binaries_for(config.compat.iptables, override, view=host)
    return binaries, notes, k3s_setup(host)


# --- commands ---------------------------------------------------------------------

def cmd_validate_config(args) -> int:
    from .core.conditions import describe
    from .timespan import format_timespan
    path = args.path or getattr(args, "config", None) or DEFAULT_PATH
    try:
        config = load_config(path)
    except ConfigError as exc:
        if args.json:
            print(json.dumps({"ok": False, "path": path, "error": str(exc)}, indent=2))
        raise
    if args.json:
        print(json.dumps({"ok": True, "path": path, "stages": [
            {"name": s.name, "conditions": [describe(c) for c in s.conditions],
             "if_installed": s.if_installed} for s in config.stages]}, indent=2))
        return EXIT_OK
    if args.quiet:
        return EXIT_OK
    print(f"{path}: ok: settle {format_timespan(config.settle)}, timeout "
          f"{format_timespan(config.timeout) if config.timeout else 'none'} "
          f"(then {config.on_timeout}), compat {config.compat.on_incompatible}, "
          f"after READY: {config.after_ready.mode}")
    for i, stage in enumerate(config.stages, 1):
        print(f"  stage {i}/{len(config.stages)} {stage.name}: "
              + "; ".join(describe(c) for c in stage.conditions)
              + (f" (skipped where {stage.if_installed} is not installed)"
                 if stage.if_installed else ""))
    print(f"  watched: {', '.join(map(str, config.watch))}")
    return EXIT_OK


def _config_kept(args) -> Config:
    """The config file, which parsed: kept as the last good one (guard)."""
    from .adapters.statefile import keep_last_good
    config = _config(args)
    keep_last_good(config.source)
    return config


def _guard_config(args, log) -> tuple[Config, str | None]:
    """The guard never stops guarding for a bad file: it runs on the last good copy,
    else the built-in defaults, and says so (journal, status, metric)."""
    from .adapters.statefile import last_good_path
    try:
        return _config_kept(args), None
    except ConfigError as exc:
        problem = str(exc)
    kept = last_good_path()
    try:
        fallback = load_config(kept) if kept and os.path.exists(kept) else defaults()
    except ConfigError:
        fallback = defaults()
    log.error(f"{problem}; guarding with {fallback.source} instead: fix the file, then "
              f"`systemctl reload fwgate-guard`")
    return fallback, problem


def _back_off(log, notifier, path: str) -> int:
    """A guard crash-looping at start waits 1, 2, 4 ... 60 s before each try: never
    giving up, never spinning (systemd 252 has no RestartSteps=)."""
    import time
    from .adapters.statefile import read_state
    from .health import crash_backoff
    try:
        previous = read_state(path)
    except (ValueError, TypeError, OSError):
        previous = None  # a torn or foreign file: start afresh
    streak, wait = crash_backoff(previous)
    if wait:
        log.warning(f"the guard before this one died {streak} time(s) in a row before it "
                    f"ever guarded; waiting {wait:g}s before trying again")
        notifier.send(STATUS=f"backing off {wait:g}s after {streak} early crash(es)",
                      EXTEND_TIMEOUT_USEC=int((wait + 30) * 1e6))
        time.sleep(wait)
    return streak


def _serve(args, role) -> int:
    from .adapters.journal import Log
    from .adapters.notify import Notifier
    from .adapters.statefile import metrics_path, state_path
    from .core.machine import Role
    from .daemon import Daemon
    log = Log()
    config, problem = _guard_config(args, log) if role is Role.GUARD else (_config(args), None)
    notifier = Notifier(log)  # before entering the netns: the notify socket lives outside
    streak = _back_off(log, notifier, state_path(_netns(args), role.value)) \
        if role is Role.GUARD else 0
    _enter_netns(args)
    daemon = Daemon(config, log, notifier, role,
                    keep_guarding=True if getattr(args, "watch", False) else None,
                    k3s=lambda: _k3s(daemon.config), reload=lambda: _config_kept(args),
                    netns=_netns(args), state_file=state_path(_netns(args), role.value),
                    metrics_file=metrics_path(config.metrics_textfile, role.value),
                    config_error=problem, crash_streak=streak)
    try:
        result = daemon.run()
    except (FwgateError, OSError):
        raise  # expected failures: main() makes them their exit codes
    except Exception as exc:
        if role is not Role.GATE or os.environ.get("FWGATE_DEBUG"):
            raise  # exit 70: systemd restarts the guard at once
        _start_over(log, exc)
    if result.exit_code:
        log.error(result.status)
    return result.exit_code


GATE_RETRIES = 3  # in place, before exit 70


def _start_over(log, exc: Exception) -> None:
    """A bug in the gate: run it again in place, the same process (exec), a few times.
    On systemd 252 a k3s start job waiting on the gate fails at the gate's first exit, and
    a restart by systemd would not start k3s; an exec keeps the job waiting. Then exit 70."""
    import time
    tries = int(os.environ.get("FWGATE_GATE_RETRY", "0")) + 1
    if tries > GATE_RETRIES:
        raise exc
    log.error(f"internal error: {type(exc).__name__}: {exc}; starting the gate over "
              f"({tries}/{GATE_RETRIES})")
    time.sleep(1.0)
    os.environ["FWGATE_GATE_RETRY"] = str(tries)
    os.execv(sys.executable, [sys.executable, "-m", "fwgate", *sys.argv[1:]])


def cmd_run(args) -> int:
    from .core.machine import Role
    return _serve(args, Role.GATE)


def cmd_guard(args) -> int:
    from .core.machine import Role
    return _serve(args, Role.GUARD)


def cmd_status(args) -> int:
    import time
    from . import health
    from .adapters.statefile import pid_alive, read_state, state_path
    from .report import status_text
    units = {}
    if not _netns(args):  # the units guard this namespace only
        from .adapters.systemd import unit_views
        try:
            units = unit_views(list(health.UNITS.values()))
        except EnvironmentProblem as exc:
            print(f"fwgate: {exc}; judging by the state files alone", file=sys.stderr)
    roles = {}
    for name, unit in health.UNITS.items():
        path = state_path(_netns(args), name)
        state = read_state(path)
        roles[name] = health.Role(name, state, state is not None and pid_alive(state.pid),
                                  units.get(unit), path)
    if not any(r.state or r.unit for r in roles.values()):
        raise FwgateError(f"no fwgate state at {state_path(_netns(args))} and no fwgate units: "
                          f"fwgate has not run since boot")
    now = time.time()
    guarding, _ = health.judge_guard(roles["guard"], now)
    prevention = roles["guard"].state.prevention if guarding else _prevention(args)
    found = health.judge(roles["gate"], roles["guard"], now, prevention)
    report = health.status_json(roles["gate"], roles["guard"], found, prevention)
    print(json.dumps(report, indent=2) if args.json else status_text(report))
    return found.exit_code


def _prevention(args, env=None) -> dict | None:
    """Asked live (the guard's word is not to be had): None inside a --netns. `env`:
    netbird.service's environment when already read."""
    if _netns(args):
        return None
    from .adapters.netbird import netbird_environment
    from .netbird import prevention
    return prevention(env or netbird_environment()).json()


def _gather_facts(config: Config, sock, snap=None):
    """Current facts for the stage conditions, and per-unit errors when systemd
    cannot be asked. snap: a snapshot already taken that holds the tables of interest."""
    from .adapters import nft
    from .model import Facts
    conditions = [c for s in config.stages for c in s.conditions]
    links, units, unit_errors = {}, {}, {}
    if any(isinstance(c, LinkUp) for c in conditions):
        from .adapters.links import LinkWatch
        watch = LinkWatch()
        links = watch.links
        watch.close()
    wanted = list(config.units_watched())
    if wanted:
        from .adapters.systemd import unit_states
        try:
            units = unit_states(wanted)
        except EnvironmentProblem as exc:
            unit_errors = {u: str(exc) for u in wanted}
    if snap is None:
        snap = nft.snapshot(sock, config.tables_of_interest())
    return Facts(units, links, snap), unit_errors


def _explain(result, env=None) -> tuple[str, ...]:
    if result.netbird is None or not result.netbird.native:
        return ()
    from .adapters.netbird import netbird_environment
    from .netbird import explain_fallback
    return explain_fallback(env or netbird_environment())


def cmd_check(args) -> int:
    from . import model
    from .adapters.nfsock import NfSocket
    from .compat.policy import judge
    from .adapters.probe import begin_probe
    from .core.conditions import describe, evaluate, skipped
    from .marks import conflicts_json
    from .report import check_text, compat_json
    config = _config(args)
    _enter_netns(args)
    policy = config.compat.on_incompatible
    binaries, notes, setup = _k3s(config)
    with NfSocket() as sock:
        # One snapshot for the stages and the compat probe: both read the same ruleset.
        # The iptables binaries start first and read it while we do.
        pending = begin_probe(sock, binaries=binaries, netns=_netns(args),
                              ifaces=config.tunnel_links(), setup=setup, notes=notes,
                              families={"inet", *(t.family for t in config.tables_of_interest())})
        snap = pending.snap
        facts, unit_errors = _gather_facts(config, sock, snap)
        digest = model.digest(snap, config.watch)
        probed = pending.finish()
    stages, all_ok = [], True
    for i, stage in enumerate(config.stages):
        why = skipped(stage, facts)
        if why:
            stages.append({"index": i + 1, "name": stage.name, "ok": True, "skipped": why,
                           "conditions": []})
            continue
        conds = []
        for cond in stage.conditions:
            holds, note = evaluate(cond, facts)
            detail = unit_errors.get(getattr(cond, "unit", None)) or note
            conds.append({"condition": describe(cond), "ok": holds and not unit_errors.get(
                getattr(cond, "unit", None)), "detail": detail})
        ok = all(c["ok"] for c in conds)
        all_ok &= ok
        stages.append({"index": i + 1, "name": stage.name, "ok": ok, "conditions": conds})
    # The live ruleset, whatever the policy: a rule k3s dies on is there until repaired.
    verdict = judge(probed.result, policy, read_only=True)
    exit_code = verdict.exit_code or (EXIT_FAILED if not all_ok else EXIT_OK)
    # netbird.service's environment (D-Bus, its iptables' --version): read once, for both.
    from .adapters.netbird import netbird_environment
    env = None if _netns(args) else netbird_environment()
    marks = conflicts_json(probed.result.conflicts)
    report = {"ok": exit_code == EXIT_OK, "exit_code": exit_code, "stages": stages,
              "prevention": _prevention(args, env),
              "genid": snap.genid, "digest": digest,
              "watch": [str(t) for t in config.watch],
              "compat": compat_json(probed.result, verdict, policy, _explain(probed.result, env)),
              # never part of the exit code: a mark conflict drops traffic, it kills no one
              "marks": marks["conflicts"], "marks_shared": marks["shared_count"]}
    print(json.dumps(report, indent=2) if args.json else check_text(report))
    return exit_code


def cmd_conflicts(args) -> int:
    from .adapters.nfsock import NfSocket
    from .adapters.nft import snapshot
    from .marks import conflict_text, conflicts_json, find_conflicts, harms
    _enter_netns(args)
    with NfSocket() as sock:
        found = find_conflicts(snapshot(sock, families=("ip", "ip6", "inet")))
    harmful = harms(found)
    if args.json:
        print(json.dumps(conflicts_json(found, shared=args.all), indent=2))
    else:
        shown = found if args.all else harmful
        print("\n".join(conflict_text(c) for c in shown) or "no packet-mark conflict harms a packet")
        if len(found) > len(harmful) and not args.all:
            print(f"({len(found) - len(harmful)} mark bit(s) shared without harm: "
                  f"fwgate conflicts --all)")
    return EXIT_FAILED if harmful else EXIT_OK


def cmd_compat(args) -> int:
    from .adapters.nfsock import NfSocket
    from .compat.policy import judge
    from .adapters.probe import probe
    from .report import compat_json, compat_text
    config = _config(args)
    _enter_netns(args)
    binaries, notes, setup = _k3s(config, args.iptables)
    with NfSocket() as sock:
        probed = probe(sock, binaries=binaries, netns=_netns(args), ifaces=config.tunnel_links(),
                       setup=setup, notes=notes, marks=False)  # it shows no mark conflicts
    # The command reports; it does not apply a policy: exit 3 only for what kills k3s.
    verdict = judge(probed.result, "fail")
    report = compat_json(probed.result, verdict, "fail", _explain(probed.result))
    if getattr(args, "verify", False):
        report["verify"] = _verify(probed.result, binaries)
    print(json.dumps(report, indent=2) if args.json else compat_text(report))
    if not args.json and "verify" in report:
        print(_verify_text(report["verify"]))
    return EXIT_INCOMPATIBLE if verdict.exit_code else EXIT_OK


def _verify(result, binaries) -> list[dict]:
    """The round trip of every ip/ip6 table iptables has a name for, with the first
    nf_tables binary judged; beside the model's report."""
    from .adapters.roundtrip import verify
    from .compat.reader import IPTABLES_TABLES
    from .compat.roundtrip import against_model
    usable = [b for b in binaries if b.argv and b.mode != "legacy"]
    if not usable:
        return [{"error": "no nf_tables iptables binary to run (give one with --iptables)"}]
    tables = [(t.family, t.name) for t in result.report.managed_tables
              if t.family in ("ip", "ip6") and t.name in IPTABLES_TABLES[t.family]]
    return [against_model(trip, result.report) for trip in verify(usable[0], tables, None)]


def _verify_text(trips: list[dict]) -> str:
    lines = []
    for t in trips:
        if "family" not in t:
            lines.append(f"verify: {t.get('error')}")
            continue
        head = f"verify {t['family']} {t['table']} with {t['binary']}: "
        if t["error"]:
            lines.append(head + t["error"])
        elif t["saved"] != "saved":
            lines.append(head + f"iptables-save {t['saved']}: kube-router's sync aborts")
        elif t["restore_error"]:
            lines.append(head + f"iptables-restore refuses the text: every sync fails "
                                f"({t['restore_error']})")
        else:
            lines.append(head + (f"{len(t['changed'])} rule(s) come back changed"
                                 if t["changed"] else "every rule comes back the same") +
                         (f"; chains deleted at every sync: {', '.join(t['gone_chains'])}"
                          if t["gone_chains"] else ""))
            for c in t["changed"]:
                lines.append(f"  {c['chain']} rule {c['position']}: {c['now']}")
                lines.append(f"    after the sync: {c['after'] or 'gone'}")
        lines += [f"  DISAGREES with the model: {d}" for d in t.get("disagreements", [])]
    return "\n".join(lines)


def cmd_repair(args) -> int:
    from .adapters.nfsock import NfSocket
    from .adapters.probe import probe
    from .report import repair_exit_blocking, repair_report, repair_text
    config = _config(args)
    _enter_netns(args)
    with NfSocket() as sock:
        probed = probe(sock, repair=True, dry_run=args.dry_run, ifaces=config.tunnel_links())
    if probed.result.conflict:
        raise FwgateError("the ruleset changed during each repair attempt; nothing was changed")
    report = repair_report(probed.result, args.dry_run)
    print(json.dumps(report, indent=2) if args.json else repair_text(report))
    return EXIT_INCOMPATIBLE if repair_exit_blocking(probed.result) else EXIT_OK


def cmd_prevent(args) -> int:
    from .adapters import prevent as P
    from .adapters.netbird import netbird_environment
    from .netbird import prevention
    if args.undo:
        gone = P.uninstall()
        print(f"removed {', '.join(gone)}" if gone else "nothing to undo: fwgate prevent "
                                                         "had not been run")
        print(f"prevention: {prevention(netbird_environment()).why}")
        return EXIT_OK
    env = netbird_environment()
    now = prevention(env)
    if not env.installed:
        raise FwgateError(f"{env.unit} is not installed: nothing to prevent")
    if env.path is None:
        raise EnvironmentProblem(env.error or f"cannot read {env.unit}'s environment")
    if now.in_force:
        print(f"prevention already in force: {now.why}")
        return EXIT_OK
    binary = P.find_nft_iptables(args.iptables)
    written = P.install(binary, env.path)
    after = prevention(netbird_environment())
    if not after.in_force:  # never half-applied: take it away again
        P.uninstall()
        raise FwgateError(f"the drop-in does not take: {after.why} (an EnvironmentFile= "
                          f"setting PATH overrides it); nothing was changed")
    print(f"wrote {', '.join(written)} (iptables: {binary})")
    print(f"prevention in force: {after.why}")
    print(f"restart {env.unit} to have its rules written through iptables "
          f"(fwgate-guard repairs what it wrote natively until then)")
    return EXIT_OK


def cmd_demo(args) -> int:
    from .demo import demo
    return demo(args.settle)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    handler = globals()["cmd_" + args.command.replace("-", "_")]
    try:
        return handler(args)
    except FwgateError as exc:
        print(f"fwgate: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:
        # Netlink refusals and the like: the environment, not the user's input.
        problem = EnvironmentProblem(_os_error_text(exc))
        print(f"fwgate: {problem}", file=sys.stderr)
        return problem.exit_code
    except Exception as exc:  # a bug: one line, the traceback only on request
        if os.environ.get("FWGATE_DEBUG"):
            raise
        print(f"fwgate: internal error: {type(exc).__name__}: {exc} "
              f"(FWGATE_DEBUG=1 shows the traceback)", file=sys.stderr)
        return EXIT_SOFTWARE  # a crash, not a verdict: systemd tries again


def _os_error_text(exc: OSError) -> str:
    import errno
    if exc.errno in (errno.EPERM, errno.EACCES):
        return f"permission denied talking to the kernel ({exc.strerror}): run as root or with CAP_NET_ADMIN"
    if exc.errno in (errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT):
        return "nf_tables is not available in this kernel"
    return exc.strerror or str(exc)


if __name__ == "__main__":
    sys.exit(main())
