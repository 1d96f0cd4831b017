"""Command line: the one place where errors become exit codes."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict

from . import __version__
from .config import DEFAULT_PATH, DEFAULTS, Config, load_config
from .errors import EnvironmentProblem, FwgateError

COMMANDS = {
    "run": "the daemon: stages, settle, compat, then READY=1",
    "check": "evaluate every stage and the compat probe once, without waiting",
    "compat": "list rules iptables-nft cannot read, and why",
    "repair": "re-encode known-incompatible rules so iptables-nft reads them",
    "status": "what the running (or last) fwgate saw: stage, digest, verdict, repairs",
    "validate-config": "check a config file and exit",
    "demo": "the gate against a Netbird-like agent in a throw-away namespace",
}

EPILOG = """exit codes: 0 ready/all good; 1 timed out (on_timeout: fail) or a check
failed; 2 usage; 3 incompatible rules; 4 environment (permission, nf_tables,
netns, D-Bus); 78 bad config."""


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
                    "iptables-nft can read them; then tell systemd it is ready.")
    parser.add_argument("--version", action="version", version=f"fwgate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    cmds = {name: sub.add_parser(name, parents=[common], help=text, description=text,
                                 epilog=EPILOG)
            for name, text in COMMANDS.items()}
    for name in ("check", "compat", "repair", "status"):
        cmds[name].add_argument("--json", action="store_true", help="print one JSON object")
    cmds["compat"].add_argument("--iptables", metavar="PATH",
                                help="also ask this iptables binary (overrides compat.iptables)")
    cmds["run"].add_argument("--watch", action="store_true",
                             help="stay running after READY and keep checking (after_ready: watch)")
    cmds["repair"].add_argument("--dry-run", action="store_true",
                                help="say what would be re-encoded; change nothing")
    cmds["validate-config"].add_argument("path", nargs="?", metavar="PATH",
                                         help="the file to check (default: --config)")
    cmds["demo"].add_argument("--settle", default="3s",
                              help="quiet window for the demo (default 3s)")
    return parser


def _config(args) -> Config:
    path = getattr(args, "config", None)
    if path is None and not os.path.exists(DEFAULT_PATH):
        return DEFAULTS  # every key is optional, so no file means the defaults
    return load_config(path or DEFAULT_PATH)


def _enter_netns(args) -> None:
    name = getattr(args, "netns", None)
    if name:
        from .adapters.netns import enter
        enter(name)


def cmd_validate_config(args) -> int:
    path = args.path or getattr(args, "config", None) or DEFAULT_PATH
    config = load_config(path)
    stages = ", ".join(s.name for s in config.stages)
    print(f"{path}: ok: {len(config.stages)} stage(s) ({stages}), settle {config.settle:g}s, "
          f"timeout {config.timeout:g}s ({config.on_timeout}), compat {config.compat.on_incompatible}")
    return 0


def cmd_run(args) -> int:
    from .adapters.journal import Log
    from .adapters.notify import Notifier
    from .daemon import GateLoop
    from .gatecompat import compat_hook
    from .state import state_path
    config = _config(args)
    log = Log()
    notifier = Notifier(log)  # before entering the netns: the notify socket lives outside
    _enter_netns(args)
    loop = GateLoop(config, log, notifier, compat=compat_hook(config, log, args),
                    reload=lambda: _config(args), watch=args.watch or None,
                    netns=getattr(args, "netns", None),
                    state_file=state_path(getattr(args, "netns", None)))
    result = loop.run()
    if result.exit_code:
        log.error(result.status)
    return result.exit_code


def cmd_status(args) -> int:
    from .state import pid_alive, read_state, state_path
    path = state_path(getattr(args, "netns", None))
    state = read_state(path)
    if state is None:
        raise FwgateError(f"no fwgate state at {path}: fwgate has not run since boot")
    alive = pid_alive(state.pid) and state.phase in ("waiting", "watching")
    if args.json:
        print(json.dumps({**asdict(state), "running": alive}, indent=2, sort_keys=True))
    else:
        print(render_status(state, alive, path))
    return 0 if state.ready_at else 1


def render_status(state, alive: bool, path: str) -> str:
    def when(t):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "never"

    running = f"running (pid {state.pid})" if alive else \
        f"not running (pid {state.pid} {'exited' if state.phase != 'stopped' else 'was stopped'})"
    lines = [f"fwgate: {running}, {state.phase}" + (f" in network namespace {state.netns}" if state.netns else ""),
             f"status: {state.status}",
             f"ready: {when(state.ready_at)}",
             f"stages: " + (", ".join(f"{k} {v:g}s" for k, v in state.stage_seconds.items()) or "none settled"),
             f"rules: genid {state.genid}, digest {(state.digest or '')[:16]}, "
             f"{state.changes_total} change(s), last {when(state.last_change_at)}, "
             f"{state.resyncs_total} resync(s)",
             f"compat: " + ("not checked yet" if state.compat_checked_at is None else
                            f"checked {when(state.compat_checked_at)}: " +
                            ("iptables-nft reads every rule" if not state.incompatible else
                             f"{len(state.incompatible)} unreadable: {state.incompatible[0]}")),
             f"repairs: {state.repairs_total}"]
    lines += [f"  {when(r['at'])} {r['rule']}" for r in state.repairs[-5:]]
    lines.append(f"(from {path}, written {when(state.updated_at)})")
    return "\n".join(lines)


def cmd_check(args) -> int:
    from .check import check, render
    config = _config(args)
    _enter_netns(args)
    report = check(config, getattr(args, "netns", None))
    print(json.dumps(report, indent=2) if args.json else render(report))
    return report["exit_code"]


def cmd_compat(args) -> int:
    from .gatecompat import run_compat_command
    config = _config(args)
    _enter_netns(args)
    return run_compat_command(config, args)


def cmd_repair(args) -> int:
    from .gatecompat import run_repair_command
    config = _config(args)
    _enter_netns(args)
    return run_repair_command(config, args)


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
        return 1


def _os_error_text(exc: OSError) -> str:
    import errno
    if exc.errno in (errno.EPERM, errno.EACCES):
        return f"permission denied talking to the kernel ({exc.strerror}): run as root or with CAP_NET_ADMIN"
    if exc.errno in (errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT):
        return "nf_tables is not available in this kernel"
    return exc.strerror or str(exc)


if __name__ == "__main__":
    sys.exit(main())
