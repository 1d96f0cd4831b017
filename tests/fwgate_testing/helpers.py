"""Helpers for tests that work on the real kernel inside namespaces they create."""
from __future__ import annotations

import os
import subprocess
import threading
import uuid
from collections.abc import Callable
from typing import TypeVar

from fwgate.adapters.netns import call_in, create, remove

T = TypeVar("T")


def new_netns(prefix: str = "fwt") -> str:
    """A namespace to delete with delete_netns(); prefer `with throwaway(prefix)`."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    create(name)
    return name


def delete_netns(name: str) -> None:
    remove(name)


def sh(netns: str, *argv: str, check: bool = True, input: str | None = None
       ) -> subprocess.CompletedProcess:
    """Run a command inside the namespace."""
    return subprocess.run(["ip", "netns", "exec", netns, *argv], check=check, text=True,
                          capture_output=True, input=input)


def add_wt0(netns: str, up: bool = True) -> None:
    """This kernel has no wireguard module: a veth pair stands in for Netbird's wt0."""
    sh(netns, "ip", "link", "add", "wt0", "type", "veth", "peer", "name", "wt0p")
    if up:
        sh(netns, "ip", "link", "set", "wt0p", "up")
        sh(netns, "ip", "link", "set", "wt0", "up")


def in_netns(netns: str, fn: Callable[..., T], *args, **kwargs) -> T:
    """Call fn in a thread that has entered the namespace; return or raise its result."""
    return call_in(netns, fn, *args, **kwargs)


def fwgate_cmd() -> list[str]:
    """The installed fwgate next to the test interpreter."""
    import sys
    candidate = os.path.join(os.path.dirname(sys.executable), "fwgate")
    return [candidate] if os.path.exists(candidate) else [sys.executable, "-m", "fwgate"]


class NotifyCapture:
    """A real AF_UNIX datagram socket standing in for systemd's NOTIFY_SOCKET.

    Records (time.monotonic() at receipt, {field: value}) for each datagram."""

    def __init__(self, directory: str):
        import socket
        self.path = os.path.join(directory, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        import time
        self.sock.settimeout(0.05)
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except OSError:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))

    def first(self, key: str, value: str | None = None) -> tuple[float, dict[str, str]] | None:
        return next(((t, m) for t, m in self.messages
                     if key in m and (value is None or m[key] == value)), None)

    def wait_status(self, fragment: str, after: float = 0.0, timeout: float = 15.0) -> float:
        """When a STATUS holding `fragment` arrived (at or after `after`)."""
        import time
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hit = next((t for t, m in self.messages
                        if t >= after and fragment in m.get("STATUS", "")), None)
            if hit is not None:
                return hit
            time.sleep(0.02)
        raise AssertionError(f"no STATUS with {fragment!r} in {timeout:g}s: {self.statuses()}")

    def statuses(self) -> list[str]:
        return [m["STATUS"] for _, m in self.messages if "STATUS" in m]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def write_config(directory: str, text: str) -> str:
    path = os.path.join(directory, "fwgate.yaml")
    with open(path, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o644)
    return path


def start_fwgate(args: list[str], notify: "NotifyCapture | None" = None, **kwargs
                 ) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop("JOURNAL_STREAM", None)
    if notify:
        env["NOTIFY_SOCKET"] = notify.path
    return subprocess.Popen(fwgate_cmd() + args, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def start_programmer(netns: str, *args: str, filter_table: bool = True) -> subprocess.Popen:
    """The Netbird-like programmer in its own process; prints 'MONOTONIC what' per change.
    filter_table: the node has iptables' filter table (else, like Netbird, it writes
    nothing there)."""
    import sys
    extra = ["--with-filter-table"] if filter_table else []
    return subprocess.Popen([sys.executable, "-m", "fwgate.programmer", "--netns", netns, *extra,
                             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def change_times(output: str) -> list[float]:
    return [float(line.split()[0]) for line in output.splitlines() if line.strip()]


KUBE_ROUTER_CHECK = ("iptables", "-t", "filter", "-C", "FORWARD", "-m", "comment", "--comment",
                     "kube-router netpol - TEMCG2JMHZYE7H7T", "-j", "KUBE-ROUTER-FORWARD")


def kube_router_state(netns: str) -> None:
    """What kube-router sets up first: its chain and the commented jump from FORWARD."""
    sh(netns, "iptables", "-N", "KUBE-ROUTER-FORWARD")
    sh(netns, "iptables", "-A", "FORWARD", "-m", "comment", "--comment",
       "kube-router netpol - TEMCG2JMHZYE7H7T", "-j", "KUBE-ROUTER-FORWARD")


def gate_yaml(settle: str = "1s", timeout: str = "30s", policy: str = "warn",
              iptables: str = "none", tunnel: bool = True, extra: str = "") -> str:
    """The shipped stages minus the unit one (no systemd here), scoped to IPv4."""
    stages = "  - name: tunnel\n    link: wt0\n" if tunnel else ""
    return f"""settle: {settle}
timeout: {timeout}
watch: [ip netbird, ip filter]
stages:
{stages}  - name: rules
    rules:
      - table: ip netbird
      - chain: ip filter FORWARD
        iifname: wt0
compat:
  on_incompatible: {policy}
  iptables: {iptables}
{extra}"""
