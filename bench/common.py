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

def _pod_block(i: int) -> tuple[list[str], list[str]]:
    """kube-router's per-pod firewall chain and one network policy: 10 rules."""
    pod, pol = f"KUBE-POD-FW-{i:012X}", f"KUBE-NWPLCY-{i:012X}"
    ip = f"10.42.{(i >> 8) & 255}.{i & 255}"
    c = f'-m comment --comment "rule to jump traffic destined to POD name:web-{i} namespace: ns-{i % 97} to chain {pod}"'
    rules = [
        f"-A KUBE-ROUTER-FORWARD {c} -d {ip}/32 -j {pod}",
        f"-A KUBE-ROUTER-OUTPUT {c} -s {ip}/32 -j {pod}",
        f'-A {pod} -m comment --comment "rule for stateful firewall for pod" '
        f"-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        f'-A {pod} -m comment --comment "rule to drop invalid state for pod" '
        f"-m conntrack --ctstate INVALID -j DROP",
        f'-A {pod} -d {ip}/32 -m comment --comment "rule to permit the traffic to pods '
        f'when source is the pod\'s local node" -m addrtype --src-type LOCAL -j ACCEPT',
        f'-A {pod} -m comment --comment "run through nw policy ns-{i % 97}-allow-web" -j {pol}',
        f"-A {pol} -p tcp -m multiport --dports 80,443,8080,{8000 + i % 1000} "
        f'-m comment --comment "rule to ACCEPT traffic from all sources to dest pods selected '
        f'by policy name: allow-web namespace ns-{i % 97}" -j MARK --set-xmark 0x10000/0x10000',
        f'-A {pol} -m comment --comment "rule to ACCEPT traffic" -m mark --mark 0x10000/0x10000 '
        f"-j RETURN",
        f'-A {pod} -m comment --comment "rule to log dropped traffic POD name:web-{i}" '
        f"-m mark ! --mark 0x10000/0x10000 -m limit --limit 10/min --limit-burst 10 "
        f"-j NFLOG --nflog-group 100",
        f'-A {pod} -m comment --comment "rule to REJECT traffic destined for POD name:web-{i}" '
        f"-m mark ! --mark 0x10000/0x10000 -j REJECT --reject-with icmp-port-unreachable",
    ]
    return [pod, pol], rules


def _service_block(i: int) -> list[str]:
    """kube-proxy's filter-table rules for a service without endpoints, and the like: 5 rules."""
    vip = f"10.43.{(i >> 8) & 255}.{i & 255}"
    return [
        f'-A KUBE-SERVICES -d {vip}/32 -p tcp -m comment --comment "ns-{i % 97}/svc-{i}:http '
        f'has no endpoints" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable',
        f'-A KUBE-EXTERNAL-SERVICES -p tcp -m comment --comment "ns-{i % 97}/svc-{i}:http has no '
        f'endpoints" -m addrtype --dst-type LOCAL -m tcp --dport {30000 + i % 2000} '
        f"-j REJECT --reject-with icmp-port-unreachable",
        f'-A KUBE-NODEPORTS -p tcp -m comment --comment "ns-{i % 97}/svc-{i}:health" '
        f"-m tcp --dport {31000 + i % 2000} -j ACCEPT",
        f"-A KUBE-FORWARD -s 10.42.{(i >> 8) & 255}.0/24 -i cni0 -o wt0 "
        f'-m comment --comment "svc-{i} egress via the tunnel" -j ACCEPT',
        f"-A KUBE-PROXY-FIREWALL -d {vip}/32 -p udp -m comment --comment "
        f'"ns-{i % 97}/svc-{i}:dns traffic not accepted by KUBE-FW" -m udp --dport 53 -j DROP',
    ]


_HEAD_RULES = [
    '-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
    '-A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS',
    '-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES',
    "-A INPUT -j KUBE-FIREWALL",
    '-A FORWARD -m comment --comment "kube-router netpol - TEMCG2JMHZYE7H7T" -j KUBE-ROUTER-FORWARD',
    '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
    '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A OUTPUT -m comment --comment "kube-router netpol - VEAAIY32XVBHCSCY" -j KUBE-ROUTER-OUTPUT',
    '-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    "-A OUTPUT -j KUBE-FIREWALL",
    "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
    '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT',
    '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
    '-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet connections" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP',
]
_FIXED_CHAINS = ["KUBE-PROXY-FIREWALL", "KUBE-NODEPORTS", "KUBE-EXTERNAL-SERVICES", "KUBE-FIREWALL",
                 "KUBE-ROUTER-FORWARD", "KUBE-ROUTER-OUTPUT", "KUBE-FORWARD", "KUBE-SERVICES"]


def filter_table(n_rules: int) -> str:
    """iptables-restore input for an `ip filter` table of exactly n_rules rules:
    two thirds kube-router pod firewalls and policies, one third kube-proxy services."""
    chains, rules = list(_FIXED_CHAINS), list(_HEAD_RULES)
    i = 0
    while len(rules) < n_rules:
        if i % 3 == 2:
            rules += _service_block(i)
        else:
            new, block = _pod_block(i)
            chains += new
            rules += block
        i += 1
    rules = rules[:n_rules]
    used = {r.split()[1] for r in rules}
    lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
    lines += [f":{c} - [0:0]" for c in chains if c in used or any(f"-j {c}" in r for r in rules)]
    lines += rules + ["COMMIT", ""]
    return "\n".join(lines)


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
