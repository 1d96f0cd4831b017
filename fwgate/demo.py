"""`fwgate demo`: the gate against a Netbird-like agent, in a throw-away namespace.

Nothing outside the namespace is touched; it is removed on the way out, also
on Ctrl-C."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import replace

from .adapters import netns
from .adapters.journal import Log
from .adapters.nfsock import NfSocket
from .adapters.notify import Notifier
from .config import UnitActive, defaults
from .daemon import Daemon
from .errors import EnvironmentProblem, UsageError
from .netbird import NetbirdEnvironment
from .programmer import NetbirdProgrammer, iptables_filter_table
from .timespan import format_timespan, parse_timespan

# What the demo's agent runs with: no iptables on its PATH, so it writes natively.
DEMO_AGENT = NetbirdEnvironment("the demo's Netbird-like agent", "(none)", "the demo")
TUNNEL_AFTER = 1.0   # the agent brings wt0 up this long after the gate starts
BURST_PAUSE = 1.0    # and pauses this long between its bursts of rules


class _Clocked(Log):
    """Plain lines on stdout, stamped with seconds since the demo started."""

    def __init__(self, t0: float):
        super().__init__(journal=False, stream=sys.stdout)
        self.t0 = t0

    def __call__(self, level: str, message: str, **fields: object) -> None:
        tag = "" if level in ("info", "notice") else f"{level}: "
        print(f"[{time.monotonic() - self.t0:6.2f}s] gate   {tag}{message}", flush=True)


class _Agent(threading.Thread):
    """The Netbird stand-in: tunnel up, then rules in bursts."""

    def __init__(self, t0: float):
        super().__init__(name="netbird-agent", daemon=True)
        self.t0, self.stop, self.last_change, self.error = t0, threading.Event(), None, None

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.2f}s] agent  {text}", flush=True)

    def run(self) -> None:
        from pyroute2 import IPRoute
        try:
            if self.stop.wait(TUNNEL_AFTER):
                return
            with IPRoute() as ipr:
                for name in ("wt0p", "wt0"):
                    ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")
            self.say("wt0 is up")
            with NfSocket() as sock:
                agent = NetbirdProgrammer(sock)
                for i, burst in enumerate(agent.BURSTS):
                    if i and self.stop.wait(BURST_PAUSE):
                        return
                    getattr(agent, burst)()
                    self.last_change = agent.last_change
                    self.say(f"{burst.replace('burst_', '')}: rules written")
        except Exception as exc:  # shown by the main thread
            self.error = exc


def demo(settle_text: str = "3s") -> int:
    if os.geteuid() != 0:
        raise EnvironmentProblem("the demo creates a network namespace: run it as root")
    try:
        settle = parse_timespan(settle_text)
    except ValueError as exc:
        raise UsageError(f"--settle: {exc}") from None
    # The shipped defaults, minus the unit stage (there is no netbird.service here),
    # repairing what iptables-nft cannot read, so the run ends the way k3s needs.
    shipped = defaults()
    # No systemd here: the agent is a thread of the demo, not netbird.service.
    stages = tuple(replace(s, if_installed=None) for s in shipped.stages
                   if not any(isinstance(c, UnitActive) for c in s.conditions))
    config = replace(shipped, settle=settle, timeout=60.0, stages=stages, source="<demo>",
                     compat=replace(shipped.compat, on_incompatible="repair", iptables="none"))
    agent = None
    with netns.throwaway("fwgate-demo") as name:
        try:
            netns.enter(name)  # this thread, and the agent thread it starts
            from pyroute2 import IPRoute
            with IPRoute() as ipr:
                ipr.link("add", ifname="wt0", kind="veth", peer="wt0p")
            # A node where iptables' filter table exists at boot: Netbird writes into it.
            with NfSocket() as sock:
                sock.batch(iptables_filter_table())
            t0 = time.monotonic()
            log = _Clocked(t0)
            print(f"fwgate demo in network namespace {name}: stages "
                  f"{', '.join(s.name for s in stages)}; settle {format_timespan(settle)}; "
                  f"watching {', '.join(map(str, config.watch))}; compat: repair; iptables' "
                  f"filter table exists at boot, so Netbird writes its rules into it\n")
            agent = _Agent(t0)
            agent.start()
            daemon = Daemon(config, log, Notifier.disabled(), keep_guarding=False,
                            on_status=lambda s: log.info(f"STATUS {s}"), tick=1.0,
                            read_netbird=lambda: DEMO_AGENT)
            result = daemon.run()
            agent.stop.set()
            agent.join()
            if agent.error:
                raise EnvironmentProblem(f"the Netbird-like agent failed: {agent.error}")
            return _summary(result, agent, settle, t0)
        finally:
            if agent:
                agent.stop.set()


def _summary(result, agent: _Agent, settle: float, t0: float) -> int:
    print()
    if result.ready_at is None:
        print(f"no READY: {result.status} (exit {result.exit_code})")
        return result.exit_code
    last = result.last_rule_change
    print(f"READY=1 at {result.ready_at - t0:.2f}s")
    if agent.last_change:
        print(f"  the agent's last rule change: {agent.last_change - t0:.2f}s")
    if last:
        print(f"  last change in the watched tables: {last - t0:.2f}s; + settle "
              f"{format_timespan(settle)} = {last + settle - t0:.2f}s; READY came "
              f"{(result.ready_at - last - settle) * 1000:.1f} ms after that")
    if shutil.which("iptables"):
        listing = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True)
        verdict = "reads it" if listing.returncode == 0 else f"fails: {listing.stderr.strip()}"
        print(f"  iptables-nft (what k3s runs) on ip filter FORWARD: {verdict}")
    return result.exit_code
