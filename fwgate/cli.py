"""Command line: the command bodies, and the one place errors become exit codes."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from dataclasses import dataclass

from . import __version__
from .config import DEFAULT_PATH, Config, ConfigError, LinkUp, load_config
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
    common.add_argument("--config", metavar="PATH", dest="config_path", default=argparse.SUPPRESS,
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
    cmds["conflicts"].add_argument("--all", action="store_true", dest="show_shared",
                                   help="also bits shared without harm (an unknown owner, an "
                                        "intended cooperation)")
    cmds["compat"].add_argument("--verify", action="store_true",
                                help="also run the binary's iptables-save → iptables-restore "
                                     "round trip of each table in a scratch namespace (what "
                                     "kube-router's next sync does) and compare rule by rule "
                                     "(root; needs nft)")
    cmds["run"].add_argument("--watch", action="store_const", const=True, dest="keep_guarding",
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


# --- options: one frozen value per command, built once from the command line -----------

@dataclass(frozen=True)
class Options:
    """What every command may be given: --config PATH (None: /etc/fwgate.yaml when it
    exists, else the built-in defaults) and --netns NAME."""
    config_path: str | None = None
    netns: str | None = None


@dataclass(frozen=True)
class ServeOptions(Options):          # run, guard
    keep_guarding: bool | None = None  # run --watch; None: as after_ready.mode says


@dataclass(frozen=True)
class CheckOptions(Options):
    json: bool = False


@dataclass(frozen=True)
class CompatOptions(Options):
    json: bool = False
    iptables: str | None = None        # overrides compat.iptables and k3s's resolution
    verify: bool = False


@dataclass(frozen=True)
class RepairOptions(Options):
    json: bool = False
    dry_run: bool = False


@dataclass(frozen=True)
class StatusOptions(Options):
    json: bool = False


@dataclass(frozen=True)
class ConflictsOptions(Options):
    json: bool = False
    show_shared: bool = False          # --all


@dataclass(frozen=True)
class ValidateOptions(Options):
    path: str | None = None            # the file to check; None: --config, else the default
    json: bool = False
    quiet: bool = False


@dataclass(frozen=True)
class PreventOptions(Options):
    undo: bool = False
    iptables: str | None = None


@dataclass(frozen=True)
class DemoOptions(Options):
    settle: str = "3s"


OPTIONS = {"run": ServeOptions, "guard": ServeOptions, "check": CheckOptions,
           "compat": CompatOptions, "repair": RepairOptions, "status": StatusOptions,
           "conflicts": ConflictsOptions, "validate-config": ValidateOptions,
           "prevent": PreventOptions, "demo": DemoOptions}


def options_of(args: argparse.Namespace) -> Options:
    """The command's options value; what the command line left out keeps its default."""
    kind = OPTIONS[args.command]
    given = vars(args)
    return kind(**{f.name: given[f.name] for f in dataclasses.fields(kind) if f.name in given})


def _config_source(opts: Options):
    from .adapters.configfile import ConfigSource
    return ConfigSource(opts.config_path)


def _enter_netns(netns: str | None) -> None:
    if netns:
        from .adapters.netns import enter
        enter(netns)


# --- commands ---------------------------------------------------------------------

def cmd_validate_config(opts: ValidateOptions) -> int:
    from .core.conditions import describe
    from .timespan import format_timespan
    path = opts.path or opts.config_path or DEFAULT_PATH
    try:
        config = load_config(path)
    except ConfigError as exc:
        if opts.json:
            print(json.dumps({"ok": False, "path": path, "error": str(exc)}, indent=2))
        raise
    if opts.json:
        print(json.dumps({"ok": True, "path": path, "stages": [
            {"name": s.name, "conditions": [describe(c) for c in s.conditions],
             "if_installed": s.if_installed} for s in config.stages]}, indent=2))
        return EXIT_OK
    if opts.quiet:
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


def _serve(opts: ServeOptions, role) -> int:
    from .adapters import k3s
    from .adapters.journal import Log
    from .adapters.notify import Notifier
    from .adapters.statefile import metrics_path, state_path
    from .core.readiness import Role
    from .daemon import Daemon
    log = Log()
    config_source = _config_source(opts)
    # The guard never stops guarding for a bad file (journal, status, metric say so).
    config, problem = config_source.load_for_guard(log.error) if role is Role.GUARD \
        else (config_source.load(), None)
    notifier = Notifier(log)  # before entering the netns: the notify socket lives outside
    state_file = state_path(opts.netns, role.value)
    streak = _back_off(log, notifier, state_file) if role is Role.GUARD else 0
    _enter_netns(opts.netns)
    daemon = Daemon(config, log, notifier, role, keep_guarding=opts.keep_guarding,
                    config_source=config_source,
                    k3s_iptables=k3s.configured,
                    netns=opts.netns, state_file=state_file,
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


def cmd_run(opts: ServeOptions) -> int:
    from .core.readiness import Role
    return _serve(opts, Role.GATE)


def cmd_guard(opts: ServeOptions) -> int:
    from .core.readiness import Role
    return _serve(opts, Role.GUARD)


def cmd_status(opts: StatusOptions) -> int:
    import time
    from . import health
    from .adapters.statefile import pid_alive, read_state, state_path
    from .report import status_text
    units = {}
    if not opts.netns:  # the units guard this namespace only
        from .adapters.systemd import unit_views
        try:
            units = unit_views(list(health.UNITS.values()))
        except EnvironmentProblem as exc:
            print(f"fwgate: {exc}; judging by the state files alone", file=sys.stderr)
    roles = {}
    for name, unit in health.UNITS.items():
        path = state_path(opts.netns, name)
        state = read_state(path)
        roles[name] = health.Role(name, state, state is not None and pid_alive(state.pid),
                                  units.get(unit), path)
    if not any(r.state or r.unit for r in roles.values()):
        raise FwgateError(f"no fwgate state at {state_path(opts.netns)} and no fwgate units: "
                          f"fwgate has not run since boot")
    now = time.time()
    guarding, _ = health.judge_guard(roles["guard"], now)
    prevention = roles["guard"].state.prevention if guarding else _prevention(opts.netns)
    found = health.judge(roles["gate"], roles["guard"], now, prevention)
    report = health.status_json(roles["gate"], roles["guard"], found, prevention)
    print(json.dumps(report, indent=2) if opts.json else status_text(report))
    return found.exit_code


def _prevention(netns: str | None, env=None) -> dict | None:
    """Asked live (the guard's word is not to be had): None inside a --netns. `env`:
    netbird.service's environment when already read."""
    if netns:
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


def cmd_check(opts: CheckOptions) -> int:
    from . import model
    from .adapters.nfsock import NfSocket
    from .compat.policy import judge
    from .adapters.k3s import configured
    from .adapters.probe import begin_probe
    from .core.conditions import describe, evaluate, skipped
    from .marks import conflicts_json
    from .report import check_text, compat_json
    config = _config_source(opts).load()
    _enter_netns(opts.netns)
    policy = config.compat.on_incompatible
    k3s = configured(config)
    with NfSocket() as sock:
        # One snapshot for the stages and the compat probe: both read the same ruleset.
        # The iptables binaries start first and read it while we do.
        pending = begin_probe(sock, binaries=k3s.binaries, netns=opts.netns,
                              ifaces=config.tunnel_links(), setup=k3s.setup, notes=k3s.notes,
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
    env = None if opts.netns else netbird_environment()
    marks = conflicts_json(probed.result.conflicts)
    report = {"ok": exit_code == EXIT_OK, "exit_code": exit_code, "stages": stages,
              "prevention": _prevention(opts.netns, env),
              "genid": snap.genid, "digest": digest,
              "watch": [str(t) for t in config.watch],
              "compat": compat_json(probed.result, verdict, policy, _explain(probed.result, env)),
              # never part of the exit code: a mark conflict drops traffic, it kills no one
              "marks": marks["conflicts"], "marks_shared": marks["shared_count"]}
    print(json.dumps(report, indent=2) if opts.json else check_text(report))
    return exit_code


def cmd_conflicts(opts: ConflictsOptions) -> int:
    from .adapters.nfsock import NfSocket
    from .adapters.nft import snapshot
    from .adapters.sockmarks import read_outside_or_why
    from .marks import conflict_text, conflicts_json, find_conflicts, harms
    _enter_netns(opts.netns)
    with NfSocket() as sock:
        tables = snapshot(sock, families=("ip", "ip6", "inet"))
    outside, why = read_outside_or_why()
    if why:
        print(f"fwgate: {why}", file=sys.stderr)
    found = find_conflicts(tables, outside)
    harmful = harms(found)
    if opts.json:
        print(json.dumps(conflicts_json(found, shared=opts.show_shared), indent=2))
    else:
        shown = found if opts.show_shared else harmful
        print("\n".join(conflict_text(c) for c in shown) or "no packet-mark conflict harms a packet")
        if len(found) > len(harmful) and not opts.show_shared:
            print(f"({len(found) - len(harmful)} mark bit(s) shared without harm: "
                  f"fwgate conflicts --all)")
    return EXIT_FAILED if harmful else EXIT_OK


def cmd_compat(opts: CompatOptions) -> int:
    from .adapters.k3s import k3s_iptables
    from .adapters.nfsock import NfSocket
    from .compat.policy import judge
    from .adapters.probe import probe
    from .report import compat_json, compat_text
    config = _config_source(opts).load()
    _enter_netns(opts.netns)
    k3s = k3s_iptables(config.compat.iptables, opts.iptables)
    with NfSocket() as sock:
        probed = probe(sock, binaries=k3s.binaries, netns=opts.netns,
                       ifaces=config.tunnel_links(), setup=k3s.setup, notes=k3s.notes,
                       marks=False)  # it shows no mark conflicts
    # The command reports; it does not apply a policy: exit 3 only for what kills k3s.
    verdict = judge(probed.result, "fail")
    report = compat_json(probed.result, verdict, "fail", _explain(probed.result))
    if opts.verify:
        report["verify"] = _verify(probed.result, k3s.binaries)
    print(json.dumps(report, indent=2) if opts.json else compat_text(report))
    if not opts.json and "verify" in report:
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


def cmd_repair(opts: RepairOptions) -> int:
    from .adapters.nfsock import NfSocket
    from .adapters.probe import probe
    from .report import repair_exit_blocking, repair_report, repair_text
    config = _config_source(opts).load()
    _enter_netns(opts.netns)
    with NfSocket() as sock:
        probed = probe(sock, repair=True, dry_run=opts.dry_run, ifaces=config.tunnel_links())
    if probed.result.conflict:
        raise FwgateError("the ruleset changed during each repair attempt; nothing was changed")
    report = repair_report(probed.result, opts.dry_run)
    print(json.dumps(report, indent=2) if opts.json else repair_text(report))
    return EXIT_INCOMPATIBLE if repair_exit_blocking(probed.result) else EXIT_OK


def cmd_prevent(opts: PreventOptions) -> int:
    from .adapters import prevent as P
    from .adapters.netbird import netbird_environment
    from .netbird import prevention
    if opts.undo:
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
    binary = P.find_nft_iptables(opts.iptables)
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


def cmd_demo(opts: DemoOptions) -> int:
    from .demo import demo
    return demo(opts.settle)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    handler = globals()["cmd_" + args.command.replace("-", "_")]
    try:
        return handler(options_of(args))
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
