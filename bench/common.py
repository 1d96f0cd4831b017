"""Shared pieces of the benchmarks: namespaces, large rulesets, statistics.

Rulesets are built with `iptables-restore` (the rules kube-proxy and kube-router
write: comments, conntrack, multiport, marks, jumps, REJECT, LOG) plus Netbird's
own tables and rules from `fwgate.programmer`, so setup time is never measured.
"""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable
FWGATE = os.path.join(os.path.dirname(sys.executable), "fwgate")


def sh(*argv: str, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, capture_output=True, text=True, input=input)


class Netns:
    """A throw-away network namespace with `wt0` up (a veth: no wireguard here)."""

    def __init__(self, prefix: str = "fwbench"):
        self.name = f"{prefix}-{uuid.uuid4().hex[:8]}"

    def __enter__(self) -> str:
        sh("ip", "netns", "add", self.name)
        sh("ip", "netns", "exec", self.name, "ip", "link", "add", "wt0", "type", "veth",
           "peer", "name", "wt0p")
        for link in ("wt0p", "wt0", "lo"):
            sh("ip", "netns", "exec", self.name, "ip", "link", "set", link, "up")
        return self.name

    def __exit__(self, *exc) -> None:
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True)


# --- rulesets --------------------------------------------------------------------

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


# --- numbers ---------------------------------------------------------------------------

def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def timed(fn, *args) -> float:
    """Wall seconds of one call."""
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


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
