"""Every benchmark in one command; writes bench/results.md.

    .venv/bin/python bench/run_all.py [--quick] [--out bench/results.md]

Run as root: it builds large rulesets in network namespaces it creates and deletes
(never the machine's own). Every figure is a median of repeated runs; every
comparison is a ratio of figures measured in the same run, interleaved.
--quick: fewer runs and a 10 s quiet window, to check the suite itself.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import gate_overhead  # noqa: E402
from gate_overhead import private_runtime_dir  # noqa: E402
from common import (  # noqa: E402
    FWGATE, PYTHON, ROOT, Netns, build_ruleset, machine, median, percentile, sh,
)

BENCH = os.path.dirname(os.path.abspath(__file__))
GATE_CONFIG = """settle: {settle}s
timeout: {timeout}s
watch: [ip netbird, ip filter]
stages:
  - name: rules
    rules:
      - table: ip netbird
      - chain: ip filter FORWARD
        iifname: wt0
compat:
  on_incompatible: warn
  iptables: none
"""


# The code before the optimisation: the optimised modules as they were at this commit.
BASELINE_COMMIT = "5687dc7"
OPTIMISED = ("fwgate/adapters/nfnl.py", "fwgate/adapters/nft.py", "fwgate/model.py",
             "fwgate/exprs.py")


def baseline_tree(commit: str) -> str:
    """A copy of today's package with the optimised modules as they were at `commit`:
    put first on PYTHONPATH, it measures 'before' beside 'after', in the same run."""
    tmp = tempfile.mkdtemp(prefix="fwgate-before-")
    shutil.copytree(os.path.join(ROOT, "fwgate"), os.path.join(tmp, "fwgate"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    for path in OPTIMISED:
        old = subprocess.run(["git", "-C", ROOT, "show", f"{commit}:{path}"], check=True,
                             capture_output=True).stdout
        with open(os.path.join(tmp, path), "wb") as fh:
            fh.write(old)
    return tmp


BASELINE: str | None = None  # set by main(): the tree to measure 'before' with


def inns(netns: str, what: str, runs: int, *extra: str, before: bool = False) -> dict:
    env = dict(os.environ)
    if before:
        env["PYTHONPATH"] = BASELINE
    out = subprocess.run([PYTHON, os.path.join(BENCH, "inns.py"), "--netns", netns, what,
                          "--runs", str(runs), *extra], check=True, capture_output=True,
                         text=True, env=env)
    return json.loads(out.stdout)


def inns_both(netns: str, what: str, runs: int) -> dict:
    """After (and, with a baseline, before) in alternating halves, so both see the
    same machine; before's lists go under "before"."""
    if not BASELINE:
        return inns(netns, what, runs)
    half = max(1, runs // 2)
    after = inns(netns, what, half)
    before = inns(netns, what, half, before=True)
    for r, more in ((after, inns(netns, what, runs - half)),
                    (before, inns(netns, what, runs - half, before=True))):
        for k, v in more.items():
            if isinstance(v, list):
                r[k] += v
            elif isinstance(v, int) and k.startswith("dumps"):
                r[k] += v
    after["before"] = before
    return after


def ms(seconds: float) -> str:
    value = seconds * 1000
    return f"{value:.3f}" if value < 1 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


# --- a process watched from outside: notify socket, /proc ---------------------------

class Watched:
    """A gate process (fwgate or the poller) with NOTIFY_SOCKET pointed at us."""

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


def fwgate_argv(netns: str, tmp: str, settle: float, timeout: float = 600) -> list[str]:
    config = os.path.join(tmp, f"fwgate-{settle:g}.yaml")
    with open(config, "w") as fh:
        fh.write(GATE_CONFIG.format(settle=settle, timeout=timeout))
    return [FWGATE, "--config", config, "--netns", netns, "run"]


def poller_argv(netns: str, settle: float) -> list[str]:
    return ["ip", "netns", "exec", netns, PYTHON, os.path.join(BENCH, "poller.py"),
            "--settle", str(settle)]


# --- 1. snapshot + digest at scale ----------------------------------------------------

def bench_snapshot(sizes: list[int], runs: dict[int, int], keep: dict) -> list[dict]:
    rows = []
    for n in sizes:
        with Netns() as netns:
            started = time.monotonic()
            build_ruleset(netns, n)
            built = time.monotonic() - started
            r = inns_both(netns, "snapshot", runs[n])
            r["n"], r["build"] = n, built
            if n in keep:  # the same namespace serves the other benchmarks of this size
                for name, fn in keep[n]:
                    r[name] = fn(netns)
            rows.append(r)
            print(f"snapshot {n}: fwgate {ms(median(r['fwgate']))} ms, nft "
                  f"{ms(median(r['nft']))} ms, iptables-save {ms(median(r['iptables_save']))} ms",
                  flush=True)
    return rows


# --- 4. footprint -----------------------------------------------------------------------

FOOTPRINT_VARIANTS = {
    "fwgate": "`ip netns exec NS fwgate run`: in the namespace, as under systemd",
    "fwgate --netns": "`fwgate --netns NS run`: enters the namespace itself",
    "poller": "`bench/poller.py`: `nft -s list ruleset` every second",
}


def footprint_argv(name: str, netns: str, tmp: str, settle: float) -> list[str]:
    probe = os.path.join(BENCH, "fwgate_probe.py")
    if name == "poller":
        return poller_argv(netns, settle)
    config = fwgate_argv(netns, tmp, settle)[2]
    if name == "fwgate --netns":
        return [PYTHON, probe, "--config", config, "--netns", netns, "run"]
    return ["ip", "netns", "exec", netns, PYTHON, probe, "--config", config, "run"]


def _first_probe(err: str) -> float | None:
    return next((float(l.split()[1]) for l in err.splitlines() if l.startswith("FIRST_PROBE ")),
                None)


def footprint(netns: str, window: float, runs: int, startup_runs: int) -> dict:
    """fwgate (three ways) and the polling loop side by side in one namespace (10k
    rules): resident memory while waiting, CPU through a quiet window, start-up."""
    out: dict[str, dict[str, list[float]]] = {
        name: {"rss_median": [], "rss_max": [], "cpu_pct": [], "startup": [], "probed": [],
               "nft_maxrss": []} for name in FOOTPRINT_VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(startup_runs):  # one at a time: exec → first probe, → its STATUS
            for name in FOOTPRINT_VARIANTS:
                w = Watched(footprint_argv(name, netns, tmp, 3600), tmp)
                at = w.first("STATUS=", 30)
                w.terminate()
                first = _first_probe(w.err)
                if first is not None:
                    out[name]["startup"].append(first - w.started)
                if at is not None:
                    out[name]["probed"].append(at - w.started)
        for _ in range(runs):
            gates = {name: Watched(footprint_argv(name, netns, tmp, window), tmp)
                     for name in FOOTPRINT_VARIANTS}
            begun = [w.first("STATUS=", 60) or time.monotonic() for w in gates.values()]
            time.sleep(max(0.0, max(begun) + 2.0 - time.monotonic()))  # past the first probe
            cpu0 = {name: w.cpu_seconds() for name, w in gates.items()}
            t0 = time.monotonic()
            samples: dict[str, list[int]] = {name: [] for name in gates}
            # The gate's window opens just before its first dump, the first STATUS follows
            # the dump: stop well before the earliest window can end (then comes compat).
            end = min(begun) + window - 3.0
            while time.monotonic() < end:
                for name, w in gates.items():
                    samples[name].append(w.rss_kib())
                time.sleep(0.05)
            elapsed = time.monotonic() - t0
            for name, w in gates.items():
                cpu = w.cpu_seconds() - cpu0[name]
                out[name]["cpu_pct"].append(100 * cpu / elapsed)
                out[name]["rss_median"].append(median(samples[name]) / 1024)
                out[name]["rss_max"].append(max(samples[name]) / 1024)
            for name, w in gates.items():
                w.first("READY=1", window + 60)
                w.finish(60)
            nft_peak = next((json.loads(l) for l in gates["poller"].err.splitlines()
                             if l.startswith("{")), {}).get("children_maxrss_kib")
            if nft_peak:
                out["poller"]["nft_maxrss"].append(nft_peak / 1024)
            print("footprint: " + "; ".join(
                f"{name} {out[name]['rss_max'][-1]:.1f} MB {out[name]['cpu_pct'][-1]:.3f}% cpu"
                for name in gates), flush=True)
    return out


def import_costs() -> list[tuple[str, float]]:
    """`python -X importtime` of what `fwgate run` imports: the biggest, cumulative."""
    code = ("import fwgate.cli, fwgate.daemon, fwgate.gatecompat, fwgate.adapters.netns, "
            "fwgate.adapters.links, fwgate.adapters.journal, fwgate.adapters.notify")
    runs = []
    for _ in range(5):
        err = subprocess.run([PYTHON, "-X", "importtime", "-c", code], capture_output=True,
                             text=True).stderr
        costs = {}
        for line in err.splitlines():
            m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
            if m and len(m.group(3)) <= 3:  # top-level imports and their direct children
                costs[m.group(4)] = int(m.group(2)) / 1e6
        runs.append(costs)
    names = set().union(*runs)
    merged = {n: median([r.get(n, 0.0) for r in runs]) for n in names}
    return sorted(merged.items(), key=lambda kv: -kv[1])[:10]


def interpreter_start() -> float:
    times = []
    for _ in range(7):
        start = time.monotonic()
        subprocess.run([PYTHON, "-c", "pass"], check=True)
        times.append(time.monotonic() - start)
    return median(times)


# --- 6. bursts --------------------------------------------------------------------------

_CHANGES = re.compile(r"(\d+) changes?")


def bursts(base_rules: int, count: int, frozen_count: int, runs: int, frozen_runs: int,
           settle: float = 3.0) -> list[dict]:
    """While fwgate waits (settle 3 s), `count` one-rule transactions in about a second
    into a watched table. Frozen: fwgate is stopped (SIGSTOP) for a burst of
    `frozen_count`, so its event socket must overflow, and it must resync instead
    of settling on a wrong view."""
    results = []
    for frozen in [False] * runs + [True] * frozen_runs:
        n = frozen_count if frozen else count
        with Netns() as netns, tempfile.TemporaryDirectory() as tmp:
            build_ruleset(netns, base_rules, repair=False)
            sh("ip", "netns", "exec", netns, PYTHON, os.path.join(BENCH, "burst.py"), "--prepare")
            w = Watched(fwgate_argv(netns, tmp, settle, timeout=300), tmp)
            w.first("STATUS=", 30)
            if frozen:
                w.proc.send_signal(signal.SIGSTOP)
            cpu0 = w.cpu_seconds()
            out = sh("ip", "netns", "exec", netns, PYTHON, os.path.join(BENCH, "burst.py"),
                     "--count", str(n), "--seconds", str(n / 10000))
            burst = json.loads(out.stdout)
            if frozen:
                w.proc.send_signal(signal.SIGCONT)
            ready = w.first("READY=1", 300)
            cpu = w.cpu_seconds() - cpu0 if w.proc.poll() is None else None
            code = w.finish(60)
            counts = [(at, int(m.group(1))) for at, text in w.statuses()
                      for m in [_CHANGES.search(text)] if m]
            final = counts[-1][1] if counts else 0
            caught_up = next((at for at, c in counts if c == final), None)
            resyncs = w.err.count("overflowed the socket; resyncing")
            r = {"frozen": frozen, "exit": code, "count": burst["count"],
                 "burst_s": burst["last"] - burst["first"], "changes_seen": final,
                 "resyncs": resyncs, "ready": ready is not None,
                 "ready_after_last": (ready - burst["last"]) if ready else None,
                 "lag": (caught_up - burst["last"]) if caught_up and not frozen else None,
                 "cpu": cpu}
            # transactions handled per second: from the burst's first commit until fwgate's
            # count of them stopped moving (not meaningful for the frozen runs)
            if caught_up and not frozen:
                r["handled_per_s"] = final / max(caught_up - burst["first"], 1e-6)
            r["early"] = ready is not None and ready < burst["last"] + settle
            r["settle"] = settle
            results.append(r)
            print(f"burst{' (frozen)' if frozen else ''}: {json.dumps(r)}", flush=True)
    return results


# --- the report -------------------------------------------------------------------------

def cpu_text(cpu: float | None) -> str:
    return "-" if cpu is None else f"{cpu:.2f}"


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def render(args, results: dict) -> str:
    L: list[str] = []
    add = L.append
    add("# fwgate benchmark results")
    add("")
    add(f"Written by `.venv/bin/python bench/run_all.py{' --quick' if args.quick else ''}` "
        f"on {results['written']} ({results['duration'] / 60:.0f} min).")
    add(f"Machine: {results['machine']}. The machine was shared with other work while this "
        "ran, so absolute times move between runs; the comparisons are ratios of figures "
        "taken in the same run, interleaved run by run.")
    add("")
    add("Rulesets: `ip filter` built with `iptables-restore` from the rules kube-proxy and "
        "kube-router write (comments, conntrack, multiport, addrtype, marks, limit/NFLOG, "
        "REJECT, jumps into per-pod and per-policy chains), then Netbird's `ip netbird` table "
        "and its three `ip filter` rules from `fwgate.programmer`; for the comparisons with "
        "iptables-save, Netbird's `ct` rule is re-encoded by `fwgate repair` (else "
        "iptables-save skips the table). Setup is never timed. `bench/common.py` builds them.")
    add("")
    add("Reproduce: as root, `.venv/bin/python bench/run_all.py` (about "
        f"{results['duration'] / 60:.0f} minutes). Parts: `bench/inns.py` (in-namespace "
        "timings), `bench/poller.py` (the polling loop as a process), `bench/burst.py`, "
        "`bench/gate_overhead.py` (also on its own).")
    add("")

    # summary
    snaps = {r["n"]: r for r in results["snapshot"]}
    notes: list[str] = []
    add("## Targets")
    add("")
    add("| # | target | measured | verdict |")
    add("| --- | --- | --- | --- |")
    s10 = snaps.get(10000)
    if s10:
        ratio = median(s10["fwgate"]) / median(s10["nft"])
        add(f"| 1 | snapshot+digest of 10k rules ≤ `nft -s list table` (ratio ≤ 1.0) | "
            f"{ms(median(s10['fwgate']))} ms vs {ms(median(s10['nft']))} ms: ratio {ratio:.2f} | "
            f"{verdict(ratio <= 1.0)} |")
    lin = results.get("linearity")
    if lin:
        add(f"| 1 | time grows linearly | per rule: {lin['text']} | {verdict(lin['ok'])} |")
    q = results.get("quiet")
    if q:
        add(f"| 2 | quiet probe cycle at {q['rules'] // 1000}k rules < 1 ms, no dump | "
            f"median {ms(median(q['cycle']))} ms, p95 {ms(percentile(q['cycle'], 0.95))} ms; "
            f"dumps in {len(q['cycle'])} cycles: {q['dumps_in_quiet_cycles']} | "
            f"{verdict(median(q['cycle']) < 0.001 and q['dumps_in_quiet_cycles'] == 0)} |")
    g = results.get("gate")
    if g:
        f = g["fwgate"]
        add(f"| 3 | gate overhead: fwgate median < 20 ms, p95 < 50 ms | median {median(f):.1f} ms, "
            f"p95 {percentile(f, 0.95):.1f} ms | {verdict(median(f) < 20 and percentile(f, 0.95) < 50)} |")
    fp = results.get("footprint")
    if fp:
        fw = fp["fwgate"]
        rss = median(fw["rss_max"])
        add(f"| 4 | RSS of `fwgate run` waiting on 10k rules < 40 MB | {rss:.1f} MB peak while "
            f"waiting, run in the namespace as under systemd; "
            f"{median(fp['fwgate --netns']['rss_max']):.1f} MB with `--netns` | {verdict(rss < 40)} |")
        cpu = median(fw["cpu_pct"])
        add(f"| 4 | CPU through a {args.window:g} s quiet window < 1% of a core | {cpu:.3f}% | "
            f"{verdict(cpu < 1)} |")
        st = median(fw["startup"])
        st_ns = median(fp["fwgate --netns"]["startup"])
        add(f"| 4 | start-up, exec → first probe < 300 ms | {ms(st)} ms in the namespace; "
            f"{ms(st_ns)} ms with `--netns` | {verdict(st < 0.3)} |")
    c = results.get("compat")
    if c:
        ratio = median(c["analyse"]) / median(c["iptables_save"])
        add(f"| 5 | compat analysis of 10k rules < one `iptables-save` | {ms(median(c['analyse']))} ms "
            f"vs {ms(median(c['iptables_save']))} ms: ratio {ratio:.2f} | {verdict(ratio < 1)} |")
        if ratio >= 1:
            notes.append(
                "**Target 5 (compat analysis) is not met.** Decoding is no longer the cost (see "
                "the profiles: expressions are decoded once, shared, from one flat loop); what "
                "remains is the analyser's own model of iptables-nft's parser in "
                "`compat/analyser.py` and `compat/equivalents.py` (a register model per rule), pure Python against iptables-save's C; sharing the undefined "
                "register and looking for an equivalent only for rules with a finding took about "
                "10% off. Meeting the target would take caching verdicts of repeated "
                "expression shapes in the analyser, or analysing only the chains that changed. "
                "It runs once per settled window, after the wait, so it adds to READY's latency "
                "only on nodes whose iptables tables are large.")
    b = results.get("bursts")
    if b:
        normal = [r for r in b if not r["frozen"]]
        frozen = [r for r in b if r["frozen"]]
        ok = all(r["ready"] and not r["early"] and r["exit"] == 0 for r in b) and \
            all(r["resyncs"] >= 1 for r in frozen)
        rate = median([r["handled_per_s"] for r in normal if r.get("handled_per_s")] or [0])
        add(f"| 6 | {b[0]['count'] // 1000}k changes in ~1 s: no lost track, right settle | "
            f"{rate:.0f} transactions/s handled, resyncs {sum(r['resyncs'] for r in normal)} "
            f"(live) / {sum(r['resyncs'] for r in frozen)} (frozen, overflow forced); READY "
            f"never early | {verdict(ok)} |")
    add("")

    for note in notes:
        add(note)
        add("")

    # 1
    add("## 1. Snapshot and digest of the watched scope")
    add("")
    add("`fwgate` = `nft.snapshot()` of `ip filter` + `model.digest()`, in-process (the daemon's "
        "path). `nft` = `nft -s list table ip filter`, `iptables-save` = `iptables-save -t "
        "filter`, each a process run in the namespace (their start-up included: that is what a "
        "poller pays). Watched scope = `ip filter` + `ip netbird`. Median of the runs, ms.")
    add("")
    add("| rules | runs | fwgate | of which snapshot | digest | watched scope | nft -s list table | "
        "iptables-save | fwgate / nft | fwgate / iptables-save |")
    add("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for n, r in sorted(snaps.items()):
        add(f"| {r['rules']} | {len(r['fwgate'])} | {ms(median(r['fwgate']))} | "
            f"{ms(median(r['snapshot']))} | {ms(median(r['digest']))} | "
            f"{ms(median(r['fwgate_watched']))} | {ms(median(r['nft']))} | "
            f"{ms(median(r['iptables_save']))} | "
            f"{median(r['fwgate']) / median(r['nft']):.2f} | "
            f"{median(r['fwgate']) / median(r['iptables_save']):.2f} |")
    add("")
    if lin:
        add(f"Per rule (µs): {lin['table']}. {lin['note']}")
        add("")

    # 2
    if q:
        add("## 2. A quiet probe cycle")
        add("")
        add(f"The daemon's own code in-process on {q['rules']} rules: `GateLoop._confirm()` "
            "(one `NFT_MSG_GETGEN`; the digest is not recomputed when the generation id has not "
            "moved) + `Gate.decide()` + `_publish()`, as when the window's timer fires and "
            f"nothing changed. {len(q['cycle'])} cycles: median {ms(median(q['cycle']))} ms, "
            f"p95 {ms(percentile(q['cycle'], 0.95))} ms; the GETGEN round trip alone "
            f"{ms(median(q['genid']))} ms. Dumps during the cycles: {q['dumps_in_quiet_cycles']} "
            f"(counted by wrapping `nft.snapshot`). For scale: the baseline dump + digest after "
            f"a change took {ms(q['baseline_dump'])} ms.")
        add("")

    # 3
    if g:
        add("## 3. Gate overhead")
        add("")
        add(g["table"])
        add("")

    # 4
    if fp:
        add("## 4. Footprint while waiting (10k-rule scope)")
        add("")
        add(f"Side by side in one namespace holding the 10k-rule `ip filter`, a {args.window:g} s "
            "window, nothing changing. fwgate's stage: `ip netbird` exists and `ip filter "
            "FORWARD` has an iifname wt0 rule; compat warn. The fwgate runs go through "
            "`bench/fwgate_probe.py` (the real CLI plus a line on stderr at its first nf_tables "
            "query). RSS sampled every 50 ms from /proc (the poller's includes its running nft "
            "child); CPU = utime+stime (+ waited-for children) from /proc over the window, from "
            "2 s after the first probe. Start-up = exec → first nf_tables query (first "
            "`nft` for the poller); 'probed' = exec → first STATUS=, sent once the first "
            f"snapshot of 10k rules is in. Medians: {len(fw['cpu_pct'])} window(s), "
            f"{len(fw['startup'])} start-ups.")
        add("")
        add("| variant | RSS while waiting, median MB | RSS peak MB | CPU % of a core | start-up ms | probed ms |")
        add("| --- | --- | --- | --- | --- | --- |")
        for name, label in FOOTPRINT_VARIANTS.items():
            d = fp[name]
            extra = ""
            if name == "poller" and d["nft_maxrss"]:
                extra = f" (its nft child alone: {median(d['nft_maxrss']):.1f})"
            add(f"| {label} | {median(d['rss_median']):.1f} | {median(d['rss_max']):.1f}{extra} | "
                f"{median(d['cpu_pct']):.3f} | {ms(median(d['startup'])) if d['startup'] else '-'} | "
                f"{ms(median(d['probed'])) if d['probed'] else '-'} |")
        add("")
        add(f"Where start-up goes: the interpreter alone starts in {ms(results['python_start'])} ms; "
            "imports (`python -X importtime`, cumulative, median of 5): " +
            ", ".join(f"`{n}` {ms(t)} ms" for n, t in results["imports"]) + ".")
        add("")

    # 5
    if c:
        add("## 5. Compat analysis")
        add("")
        add(f"`compat.analyser.analyse()` over a snapshot of every iptables family ({c['rules']} "
            f"rules, {c['findings']} findings), in-process, vs one `iptables-save -t filter`; "
            f"{len(c['analyse'])} runs. The whole probe (snapshot + analysis) is given too.")
        add("")
        add("| analyse | snapshot + analyse | iptables-save | analyse / iptables-save |")
        add("| --- | --- | --- | --- |")
        add(f"| {ms(median(c['analyse']))} | {ms(median(c['probe']))} | "
            f"{ms(median(c['iptables_save']))} | {median(c['analyse']) / median(c['iptables_save']):.2f} |")
        add("")

    # 6
    if b:
        add("## 6. Bursts")
        add("")
        settle = b[0]["settle"]
        frozen_n = next((r["count"] for r in b if r["frozen"]), 0)
        add(f"A namespace with {args.burst_base} iptables rules and Netbird's; `fwgate run` waits "
            f"(settle {settle:g} s, watching `ip filter` and `ip netbird`); `bench/burst.py` "
            f"commits {b[0]['count']} one-rule transactions in about 1 s into `ip netbird`, "
            "round-robin over 200 chains (10 000 appends to a single chain take the kernel ~13 s "
            "here: it copies the chain's rule array on every commit). 'frozen' runs SIGSTOP "
            f"fwgate for a burst of {frozen_n} (at the same rate), so the kernel must drop events "
            "(ENOBUFS) on its 8 MiB socket: fwgate must say so, resync, and still settle only "
            "after the last change. Handled/s = transactions fwgate counted ÷ time from the "
            "first commit until its count stopped moving (each transaction is a NEWRULE and a "
            "NEWGEN event, both read and decoded).")
        add("")
        add("| run | burst s | transactions | counted by fwgate | handled/s | caught up after last commit, ms | resyncs | READY − last change, ms | early? | CPU s |")
        add("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in b:
            add(f"| {'frozen' if r['frozen'] else 'live'} | {r['burst_s']:.2f} | {r['count']} | "
                f"{r['changes_seen']} | {r.get('handled_per_s', 0):.0f} | "
                f"{ms(r['lag']) if r['lag'] is not None else '-'} | {r['resyncs']} | "
                f"{ms(r['ready_after_last']) if r['ready_after_last'] is not None else 'no READY'} | "
                f"{'YES' if r['early'] else 'no'} | {cpu_text(r['cpu'])} |")
        add("")
        add(f"READY − last change is the {settle:g} s window plus the gate's overhead: below "
            f"{settle * 1000:.0f} ms would be early. A frozen run counts fewer changes than it was "
            "sent: the dropped events are the overflow; the resync restarts the window instead.")
        add("")

    if results.get("baseline"):
        add("## Before and after")
        add("")
        add(f"'Before' = `{' '.join(OPTIMISED)}` as of commit {results['baseline']} (the rest of "
            "the package as now), measured in the same run and namespaces as 'after', in "
            "alternating halves. Medians, ms.")
        add("")
        add("| measure | before | after | speed-up | before / nft | after / nft |")
        add("| --- | --- | --- | --- | --- | --- |")
        for n, r in sorted(snaps.items()):
            b0 = r.get("before")
            if not b0:
                continue
            before, after, nft = median(b0["fwgate"]), median(r["fwgate"]), median(r["nft"] + b0["nft"])
            add(f"| snapshot + digest, {r['rules']} rules | {ms(before)} | {ms(after)} | "
                f"{before / after:.1f}× | {before / nft:.2f} | {after / nft:.2f} |")

        def speedup(label: str, before: float, after: float) -> None:
            add(f"| {label} | {ms(before)} | {ms(after)} | {before / after:.1f}× | | |")

        if c and c.get("before"):
            speedup(f"compat analysis, {c['rules']} rules",
                    median(c["before"]["analyse"]), median(c["analyse"]))
            speedup("compat probe (snapshot + analysis)",
                    median(c["before"]["probe"]), median(c["probe"]))
        if q and q.get("before"):
            speedup(f"quiet probe cycle, {q['rules']} rules",
                    median(q["before"]["cycle"]), median(q["cycle"]))
            speedup(f"the daemon's baseline dump + digest, {q['rules']} rules (one run)",
                    q["before"]["baseline_dump"], q["baseline_dump"])
        add("")

    add("## Profiles")
    add("")
    add(results["profile_note"])
    add("")
    return "\n".join(L)


def linearity(rows: list[dict]) -> dict | None:
    per = {r["rules"]: median(r["fwgate"]) / r["rules"] * 1e6 for r in rows}
    if len(per) < 2:
        return None
    sizes = sorted(per)
    base, top = per[sizes[1] if len(sizes) > 2 else sizes[0]], per[sizes[-1]]
    # Linear: time per rule does not grow with size (within 1.5x: caches, the kernel's dump).
    ok = top <= 1.5 * base
    nft = {r["rules"]: median(r["nft"]) / r["rules"] * 1e6 for r in rows}
    text = ", ".join(f"{n // 1000}k {per[n]:.1f} µs" for n in sizes)
    table = ", ".join(f"{n}: fwgate {per[n]:.1f}, nft {nft[n]:.1f}" for n in sizes)
    note = ("Linear means the cost per rule stays flat from 10k to 100k (within 1.5×); at 1k the "
            "fixed costs (a few requests, the genid checks) still show.")
    return {"ok": ok, "text": text, "table": table, "note": note}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=os.path.join(BENCH, "results.md"))
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--window", type=float, help="quiet window for the footprint (60 s)")
    parser.add_argument("--burst-base", type=int, default=10000)
    parser.add_argument("--baseline", default=BASELINE_COMMIT, metavar="COMMIT",
                        help="also measure the optimised modules as of COMMIT ('none': don't)")
    parser.add_argument("--skip", default="", help="comma list: snapshot,quiet,compat,footprint,"
                                                   "bursts,gate,profile")
    parser.add_argument("--render", metavar="JSON", help="only write the report again from a "
                                                          "run's profiles/last-run.json")
    args = parser.parse_args()
    # fwgate's state files go to a directory of ours, removed at exit, not /run/fwgate.
    private_runtime_dir()
    if args.render:
        results = json.load(open(args.render))
        args.window = results.get("window", args.window or 60.0)
        results.setdefault("written", time.strftime(
            "%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(args.render))))
        with open(args.out, "w") as fh:
            fh.write(render(args, results))
        return 0
    if os.geteuid() != 0:
        print("bench: run as root (it creates network namespaces)", file=sys.stderr)
        return 4
    skip = set(filter(None, args.skip.split(",")))
    quick = args.quick
    args.window = args.window or (10.0 if quick else 60.0)
    sizes = [int(x) for x in args.sizes.split(",")]
    runs = {n: (3 if quick else 9 if n <= 10000 else 4) for n in sizes}
    started = time.monotonic()
    results: dict = {"machine": machine()}
    global BASELINE
    if args.baseline != "none":
        BASELINE = baseline_tree(args.baseline)
        results["baseline"] = args.baseline

    keep: dict[int, list] = {}
    big, mid = max(sizes), 10000 if 10000 in sizes else sizes[0]
    if "quiet" not in skip:
        keep.setdefault(big, []).append(
            # Today's only: the daemon itself changed since the baseline commit.
            ("quiet", lambda ns: inns(ns, "quiet", 50 if quick else 500)))
    if "compat" not in skip:
        keep.setdefault(mid, []).append(("compat", lambda ns: inns_both(ns, "compat", 4 if quick else 10)))
    if "profile" not in skip:
        keep.setdefault(mid, []).append(("profile", lambda ns: inns(
            ns, "profile", 1, "--out", os.path.join(BENCH, "profiles", "after.txt"))))
    if "footprint" not in skip:
        keep.setdefault(mid, []).append(("footprint", lambda ns: footprint(
            ns, args.window, 1 if quick else 3, 3 if quick else 9)))
    rows = bench_snapshot(sizes, runs, keep) if "snapshot" not in skip else []
    results["snapshot"] = rows
    for r in rows:
        for name in ("quiet", "compat", "footprint"):
            if name in r:
                results[name] = r.pop(name)
    results["linearity"] = linearity(rows)
    if "footprint" not in skip:
        results["imports"] = import_costs()
        results["python_start"] = interpreter_start()
    if "bursts" not in skip:
        results["bursts"] = bursts(args.burst_base, 10000, 60000, 1 if quick else 3, 1 if quick else 2)
    if "gate" not in skip:
        n = 3 if quick else 15
        samples: dict[str, list[float]] = {"fwgate": [], "1 s nft-list polling": []}
        for i in range(n):
            for name, runner in (("fwgate", gate_overhead.fwgate_run),
                                 ("1 s nft-list polling", gate_overhead.poll_run)):
                with gate_overhead.Netns() as netns:
                    samples[name].append(runner(netns, 1.0, 0.3) * 1000)
            print(f"gate overhead {i + 1}/{n}: fwgate {samples['fwgate'][-1]:.1f} ms", flush=True)
        table = gate_overhead.render(samples, n, 1.0, 0.3)
        results["gate"] = {"fwgate": samples["fwgate"], "table": table}
    results["profile_note"] = profile_note()
    results["duration"] = time.monotonic() - started
    results["window"] = args.window
    results["written"] = time.strftime("%Y-%m-%d %H:%M")
    if BASELINE:
        shutil.rmtree(BASELINE, ignore_errors=True)
    with open(args.out, "w") as fh:
        fh.write(render(args, results))
    with open(os.path.join(BENCH, "profiles", "last-run.json"), "w") as fh:
        json.dump(results, fh, indent=1, default=str)
    print(f"wrote {args.out}")
    return 0


def profile_note() -> str:
    parts = ["pyinstrument (`pip install pyinstrument` into the venv; not a project "
             "dependency), three runs each of one `ip filter` snapshot + digest and one compat "
             "analysis at 10k rules. Full trees: `bench/profiles/before.txt` (the code before "
             "the optimisation) and `bench/profiles/after.txt` (written by this run)."]
    summary = os.path.join(BENCH, "profiles", "summary.md")
    if os.path.exists(summary):
        parts.append(open(summary).read().strip())
    return "\n\n".join(parts)


if __name__ == "__main__":
    sys.exit(main())
