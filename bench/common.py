"""Shared pieces of the benchmarks: the versions compared, namespaces, large rulesets,
processes watched from outside, statistics, and the JSON result files.

Rulesets are built with `iptables-restore` (the rules kube-proxy and kube-router
write: comments, conntrack, multiport, marks, jumps, REJECT, LOG) plus Netbird's
own tables and rules from `fwgate.programmer`, so setup time is never measured.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

from fwgate.adapters.netns import throwaway

# bench/ uses the test helpers package (tests/fwgate_testing), never the other way round.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from fwgate_testing.rulesets import filter_table  # noqa: E402,F401  (scripts import it from here)

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
RESULTS = os.path.join(BENCH, "results")   # committed: what results.md is rendered from
OUT = os.path.join(BENCH, "out")           # not committed: --quick runs and scratch
PYTHON = sys.executable
FWGATE = os.path.join(os.path.dirname(sys.executable), "fwgate")


def sh(*argv: str, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, capture_output=True, text=True, input=input)


def Netns(prefix: str = "fwbench"):
    """A throw-away namespace with `wt0` up (fwgate.adapters.netns.throwaway)."""
    return throwaway(prefix, wt0=True)


# --- the versions compared ------------------------------------------------------------

@dataclass(frozen=True)
class Version:
    """A checkout with its own .venv: 'after' is this one, 'before' one given by --before.
    Each is measured with its own interpreter, CLI and bench/inns.py."""
    label: str
    root: str

    @property
    def python(self) -> str:
        return PYTHON if self.root == ROOT else os.path.join(self.root, ".venv", "bin", "python")

    @property
    def fwgate(self) -> str:
        return os.path.join(os.path.dirname(self.python), "fwgate")

    def script(self, name: str) -> str:
        return os.path.join(self.root, "bench", name)

    def describe(self) -> str:
        """The commit, and whether the working tree differs from it (never a path)."""
        head = sh("git", "-C", self.root, "rev-parse", "--short", "HEAD").stdout.strip()
        dirty = sh("git", "-C", self.root, "status", "--porcelain", "--untracked-files=no").stdout
        return f"{head} + uncommitted changes" if dirty.strip() else head


AFTER = Version("after", ROOT)


def versions(before: str | None) -> list[Version]:
    if not before:
        return [AFTER]
    root = os.path.abspath(before)
    if not os.path.exists(os.path.join(root, ".venv", "bin", "python")):
        raise SystemExit(f"--before {before}: expected a checkout with its own .venv "
                         f"(./scripts/setup --test in it)")
    return [AFTER, Version("before", root)]


def child_json(argv: list[str], env: dict | None = None) -> dict:
    """Run a measuring child; its last stdout line is one JSON object."""
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"{' '.join(argv[:4])} ... failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- rulesets --------------------------------------------------------------------------

def build_ruleset(netns: str, n_rules: int, netbird: bool = True, repair: bool = True) -> None:
    """n_rules iptables rules in `ip filter`, then Netbird's tables and rules (and,
    with repair, its one rule re-encoded the way iptables itself writes it, so that
    iptables-save reads the whole table and the comparison is fair)."""
    sh("ip", "netns", "exec", netns, "iptables-restore", input=filter_table(n_rules))
    if netbird:
        sh(PYTHON, "-m", "fwgate.programmer", "--netns", netns, "--pause", "0")
        if repair:
            subprocess.run([FWGATE, "--config", os.path.join(ROOT, "config", "fwgate.yaml"),
                            "--netns", netns, "repair"], check=True, capture_output=True)


# --- a process watched from outside: notify socket, /proc -------------------------------

class Watched:
    """A gate process (fwgate or the poller) with NOTIFY_SOCKET pointed at us; every
    notification is stamped (time.monotonic()) as it arrives."""

    def __init__(self, argv: list[str], tmp: str):
        self.messages: list[tuple[float, str]] = []
        self.path = os.path.join(tmp, f"notify-{len(os.listdir(tmp))}")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.stop = False
        self.thread = threading.Thread(target=self._listen, daemon=True)
        self.thread.start()
        env = dict(os.environ, NOTIFY_SOCKET=self.path)
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.err = ""

    def _listen(self) -> None:
        while not self.stop:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            now = time.monotonic()
            for line in data.decode(errors="replace").split("\n"):
                self.messages.append((now, line))

    def first(self, prefix: str, timeout: float) -> float | None:
        """When the first notification line starting with `prefix` came (None: not in time)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, line in list(self.messages):
                if line.startswith(prefix):
                    return at
            if self.proc.poll() is not None:
                time.sleep(0.1)
                return next((at for at, line in self.messages if line.startswith(prefix)), None)
            time.sleep(0.002)
        return None

    def statuses(self) -> list[tuple[float, str]]:
        return [(at, line[7:]) for at, line in self.messages if line.startswith("STATUS=")]

    def pids(self) -> list[int]:
        """The process and its children (nft, for the poller)."""
        out, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            try:
                for task in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{task}/children") as fh:
                        todo += [int(c) for c in fh.read().split()]
            except OSError:
                pass
        return out

    def rss_kib(self) -> int:
        total = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/status") as fh:
                    total += next(int(l.split()[1]) for l in fh if l.startswith("VmRSS:"))
            except (OSError, StopIteration):
                pass
        return total

    def cpu_seconds(self) -> float:
        """utime + stime, and the same of waited-for children."""
        with open(f"/proc/{self.proc.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")

    def finish(self, timeout: float = 30) -> int:
        try:
            _, self.err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, self.err = self.proc.communicate()
        self.stop = True
        self.thread.join(1)
        self.sock.close()
        return self.proc.returncode

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.finish()


def gate_config(tmp: str, settle: float, timeout: float = 600, link: bool = False) -> str:
    """A config file for `fwgate run` that both versions read: (wt0 up,) Netbird's table
    and its iifname rule in ip filter FORWARD, then compat with no iptables binary."""
    path = os.path.join(tmp, f"fwgate-{settle:g}-{int(link)}.yaml")
    with open(path, "w") as fh:
        fh.write(f"settle: {settle:g}s\ntimeout: {timeout:g}s\nwatch: [ip netbird, ip filter]\n"
                 "stages:\n" + ("  - name: tunnel\n    link: wt0\n" if link else "") +
                 "  - name: rules\n    rules:\n      - table: ip netbird\n"
                 "      - chain: ip filter FORWARD\n        iifname: wt0\n"
                 "compat:\n  on_incompatible: warn\n  iptables: none\n")
    return path


def private_runtime_dir() -> str:
    """Point fwgate's RUNTIME_DIRECTORY (state files) at a temp dir removed at exit, on
    a tmpfs as /run/fwgate is on a node: on a disk mounted with `discard`, replacing
    the state file can block for milliseconds, which no node pays."""
    import atexit
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    path = tempfile.mkdtemp(prefix="fwgate-bench-run-", dir=shm)
    os.environ["RUNTIME_DIRECTORY"] = path
    atexit.register(shutil.rmtree, path, True)
    return path


# --- numbers ---------------------------------------------------------------------------

def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def machine() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((l.split(":", 1)[1].strip() for l in fh if l.startswith("model name")), "")
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    tools = []
    for argv in (["nft", "--version"], ["iptables", "--version"]):
        try:
            tools.append(sh(*argv).stdout.strip())
        except (OSError, subprocess.CalledProcessError):
            pass
    return (f"{os.cpu_count()} cores ({model}), {mem:.0f} GiB, kernel {platform.release()}, "
            f"Python {platform.python_version()}, {', '.join(tools)}")


def relative(text: str, roots: list[str]) -> str:
    """Paths in recorded text made relative to their checkout (profiles print absolute ones)."""
    for root in sorted(set(roots), key=len, reverse=True):
        text = text.replace(root.rstrip("/") + "/", "")
    return text.replace("../fwgate/", "fwgate/")


# --- result files ----------------------------------------------------------------------

def arguments(doc: str) -> argparse.ArgumentParser:
    """The options every measuring script takes."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny runs: checks the script works")
    parser.add_argument("--before", metavar="CHECKOUT",
                        help="also measure this checkout (with its own .venv), interleaved")
    parser.add_argument("--out", metavar="DIR",
                        help="where the JSON goes (default bench/results, with --quick bench/out)")
    return parser


def needs_root() -> None:
    if os.geteuid() != 0:
        raise SystemExit("bench: run as root (it creates network namespaces)")


def save(args: argparse.Namespace, name: str, data: dict, versions_: list[Version]) -> str:
    """Write OUT/NAME.json: the data and what produced it (no machine paths)."""
    out = args.out or (OUT if args.quick else RESULTS)
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, f"{name}.json")
    script = os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)
    record = {"name": name, "script": script, "quick": args.quick,
              "written": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(),
              "versions": {v.label: v.describe() for v in versions_}, "data": data}
    with open(path, "w") as fh:
        json.dump(record, fh, indent=1)
        fh.write("\n")
    print(f"wrote {os.path.relpath(path, ROOT)}", flush=True)
    return path
