"""Render bench/results.md (and the gate-overhead table in bench/README.md) from the
JSON files the measuring scripts wrote. Measures nothing; needs no root.

    .venv/bin/python bench/report.py [--results bench/results] [--out bench/results.md] [--readme bench/README.md]

A missing JSON leaves its section out. bench/results/notes.md, written by a person
(what got slower and why), is included as it is.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import BENCH, RESULTS, ROOT, median, percentile  # noqa: E402

POLLING = "1 s nft-list polling"
BEGIN, END = "<!-- gate-overhead:begin -->", "<!-- gate-overhead:end -->"


def ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    value = seconds * 1000
    return f"{value:.3f}" if value < 1 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def ratio(before: float, after: float) -> str:
    """after / before for a cost: above 1 is slower (or bigger)."""
    return f"{after / before:.2f}" if before else "-"


def load(folder: str) -> dict[str, dict]:
    out = {}
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if name.endswith(".json"):
            with open(os.path.join(folder, name)) as fh:
                out[name[:-5]] = json.load(fh)
    return out


class Report:
    def __init__(self, runs: dict[str, dict], folder: str):
        self.runs, self.folder, self.lines = runs, folder, []
        self.add = self.lines.append

    def data(self, name: str) -> dict | None:
        return self.runs[name]["data"] if name in self.runs else None

    # -- head ------------------------------------------------------------------------

    def head(self) -> None:
        add = self.add
        any_run = next(iter(self.runs.values()))
        versions = {}
        for r in self.runs.values():
            versions.update(r["versions"])
        add("# fwgate benchmark results")
        add("")
        add(f"Rendered by `bench/report.py` from `{os.path.relpath(self.folder, ROOT)}/*.json`; "
            "each file names the script that measured it and when. Re-run: as root, "
            "`.venv/bin/python bench/run_all.py --before CHECKOUT` (bench/README.md).")
        add("")
        add(f"Machine: {any_run['machine']}. **The machine was shared**: other engineers ran "
            "test suites on its 2 cores while these ran, so absolute times move between runs. "
            "Every comparison is between figures taken in the same run, in the same namespace "
            "and ruleset, interleaved run by run; figures are medians of repeated runs.")
        add("")
        add("Versions: " + "; ".join(f"**{label}** = {desc}" for label, desc in versions.items()) +
            (". 'before' is the code before the sans-I/O restructuring (issue 14), measured by "
             "its own checkout: its CLI, its `bench/inns.py`, its `bench/fwgate_probe.py`."
             if "before" in versions else "."))
        add("")
        written = ", ".join(f"`{r['script']}` {r['written']}" + (" (--quick)" if r["quick"] else "")
                            for r in self.runs.values())
        add(f"Written: {written}.")
        add("")

    # -- targets ---------------------------------------------------------------------

    def targets(self) -> None:
        add = self.add
        rows = []
        speed, gate, foot = self.data("speed"), self.data("gate_overhead"), self.data("footprint")
        bursts = self.data("bursts")
        if speed:
            s10 = speed["sizes"].get("10000", {}).get("after")
            if s10:
                r = median(s10["fwgate"]) / median(s10["nft"])
                rows.append(("1", "snapshot+digest of 10k rules ≤ `nft -s list table`",
                             f"{ms(median(s10['fwgate']))} ms vs {ms(median(s10['nft']))} ms: "
                             f"ratio {r:.2f}", r <= 1.0))
            per = {int(n): median(v["after"]["fwgate"]) / v["after"]["rules"] * 1e6
                   for n, v in speed["sizes"].items()}
            if len(per) > 1:
                sizes = sorted(per)
                base = per[sizes[1] if len(sizes) > 2 else sizes[0]]
                rows.append(("1", "time grows linearly (per rule, within 1.5× from 10k up)",
                             ", ".join(f"{n // 1000}k {per[n]:.1f} µs" for n in sizes),
                             per[sizes[-1]] <= 1.5 * base))
            q = (speed.get("quiet") or {}).get("after")
            if q:
                rows.append(("2", f"quiet probe cycle at {q['rules'] // 1000}k rules < 1 ms, no dump",
                             f"median {ms(median(q['cycle']))} ms, p95 "
                             f"{ms(percentile(q['cycle'], 0.95))} ms; dumps in {len(q['cycle'])} "
                             f"cycles: {q['dumps_in_quiet_cycles']}",
                             median(q["cycle"]) < 0.001 and q["dumps_in_quiet_cycles"] == 0))
        if gate:
            f = gate["overhead_ms"]["after"]
            rows.append(("3", "gate overhead: median < 20 ms, p95 < 50 ms",
                         f"median {median(f):.1f} ms, p95 {percentile(f, 0.95):.1f} ms",
                         median(f) < 20 and percentile(f, 0.95) < 50))
        if foot:
            w, s = foot["waiting"]["after"], foot["startup"]["after"]
            rows.append(("4", "RSS of `fwgate run` waiting on 10k rules < 40 MB",
                         f"{median(w['rss_max']):.1f} MB peak", median(w["rss_max"]) < 40))
            rows.append(("4", f"CPU through a {foot['window_s']:g} s quiet window < 1% of a core",
                         f"{median(w['cpu_pct']):.3f}%", median(w["cpu_pct"]) < 1))
            rows.append(("4", "start-up, exec → first probe < 300 ms",
                         f"{ms(median(s['startup']))} ms", median(s["startup"]) < 0.3))
        if bursts:
            mine = [r for r in bursts["runs"] if r["version"] == "after"]
            live = [r for r in mine if not r["frozen"]]
            frozen = [r for r in mine if r["frozen"]]
            ok = all(r["ready"] and not r["early"] and r["exit"] == 0 for r in mine) and \
                all(r["resyncs"] >= 1 for r in frozen)
            rate = median([r["handled_per_s"] for r in live if r.get("handled_per_s")] or [0])
            rows.append(("6", "10k changes in ~1 s: no lost track, READY never early",
                         f"{rate:.0f} transactions/s handled; resyncs "
                         f"{sum(r['resyncs'] for r in live)} live, "
                         f"{sum(r['resyncs'] for r in frozen)} frozen (overflow forced)", ok))
        for name in sorted(n for n in self.runs if n.startswith("exposure-")):
            e = self.data(name)
            ok = all(e[f].get("n") and e[f]["p95_ms"] <= 50 for f in ("ip", "ip6")) and \
                not e["unrepaired"]
            rows.append(("7", f"exposure window p95 ≤ 50 ms, {e['reinits']} re-inits, "
                               f"{e['rules'] // 1000}k-rule ip filter",
                         "; ".join(f"{f} p95 {e[f].get('p95_ms', '-')} ms" for f in ("ip", "ip6")) +
                         f"; unrepaired {e['unrepaired']}", ok))
        k = self.data("k3s_start")
        if k is not None:
            worst = max(k[kind]["max_ms"] for kind in ("plain", "filter-table-at-boot"))
            rows.append(("8", "k3s starts ≤ 1 s after Netbird's last change + settle, "
                              "plain and filter-table-at-boot nodes",
                         "; ".join(f"{kind} median {k[kind]['median_ms']} ms"
                                   for kind in ("plain", "filter-table-at-boot")) +
                         f"; worst {worst} ms", 0 <= worst <= 1000))
        m = self.data("marks_speed")
        if m is not None:
            rows.append(("9", "mark conflicts cost less than the dump they run on (50k rules)",
                         f"cold {m['cold_per_dump']}, warm {m['warm_per_dump']} of the dump",
                         m["cold_per_dump"] < 1))
            if "process_per_nft" in m:
                rows.append(("9", "`fwgate conflicts` whole process ≤ 0.5 × `nft -s list ruleset` "
                                  "(50k rules)",
                             f"{m['fwgate_conflicts_ms']} ms vs {m['nft_list_ms']} ms: ratio "
                             f"{m['process_per_nft']}", m["process_per_nft"] <= 0.5))
        if not rows:
            return
        add("## Targets")
        add("")
        add("| # | target | measured (after) | verdict |")
        add("| --- | --- | --- | --- |")
        for n, target, measured, ok in rows:
            add(f"| {n} | {target} | {measured} | {verdict(ok)} |")
        add("")
        add("Targets as in bench/README.md; 7 is issue 11's goal.")
        add("")

    # -- before / after ----------------------------------------------------------------

    def before_after(self) -> None:
        rows: list[tuple[str, float, float, str]] = []   # label, before, after, unit
        speed, gate, foot = self.data("speed"), self.data("gate_overhead"), self.data("footprint")
        bursts = self.data("bursts")
        if speed:
            for n, v in sorted(speed["sizes"].items(), key=lambda kv: int(kv[0])):
                if "before" in v:
                    rows.append((f"snapshot + digest, {v['after']['rules']} rules",
                                 median(v["before"]["fwgate"]), median(v["after"]["fwgate"]), "ms"))
                    rows.append(("  … nft -s list table, same runs (the machine's drift)",
                                 median(v["before"]["nft"]), median(v["after"]["nft"]), "ms"))
            q = speed.get("quiet") or {}
            if "before" in q:
                rows.append((f"quiet probe cycle, {q['after']['rules']} rules (see note)",
                             median(q["before"]["cycle"]), median(q["after"]["cycle"]), "ms"))
                rows.append(("  … its GETGEN round trip alone", median(q["before"]["genid"]),
                             median(q["after"]["genid"]), "ms"))
                rows.append((f"the daemon's baseline dump + digest, {q['after']['rules']} rules "
                             "(one each)", q["before"]["baseline_dump"],
                             q["after"]["baseline_dump"], "ms"))
        if gate and "before" in gate["overhead_ms"]:
            g = gate["overhead_ms"]
            rows.append(("gate overhead, median", median(g["before"]) / 1000,
                         median(g["after"]) / 1000, "ms"))
            rows.append(("gate overhead, p95", percentile(g["before"], 0.95) / 1000,
                         percentile(g["after"], 0.95) / 1000, "ms"))
        if foot and "before" in foot["waiting"]:
            w, s = foot["waiting"], foot["startup"]
            for mode in ("", " --netns"):
                rows.append((f"RSS waiting on 10k rules{mode}", median(w["before" + mode]["rss_max"]),
                             median(w["after" + mode]["rss_max"]), "MB"))
            rows.append(("CPU through the quiet window", median(w["before"]["cpu_pct"]),
                         median(w["after"]["cpu_pct"]), "%"))
            for mode in ("", " --netns"):
                rows.append((f"start-up, exec → first probe{mode}",
                             median(s["before" + mode]["startup"]),
                             median(s["after" + mode]["startup"]), "ms"))
            rows.append(("exec → first STATUS (10k-rule snapshot in)",
                         median(s["before"]["probed"]), median(s["after"]["probed"]), "ms"))
        if bursts:
            by = {label: [r for r in bursts["runs"] if r["version"] == label and not r["frozen"]]
                  for label in ("before", "after")}
            if by["before"] and by["after"]:
                rows.append(("burst: CPU for 10k transactions", median([r["cpu_s"] for r in by["before"]]),
                             median([r["cpu_s"] for r in by["after"]]), "s"))
                rows.append(("burst: caught up after the last commit",
                             median([r["lag_s"] for r in by["before"]]),
                             median([r["lag_s"] for r in by["after"]]), "ms"))
                rows.append(("burst: READY − last change (3 s window)",
                             median([r["ready_after_last_s"] for r in by["before"]]),
                             median([r["ready_after_last_s"] for r in by["after"]]), "ms"))
        if not rows:
            return
        add = self.add
        add("## Before and after")
        add("")
        add("Medians; after / before above 1 is slower (or bigger). Rows starting with … are "
            "context measured in the same runs.")
        add("")
        add("| measure | before | after | after / before |")
        add("| --- | --- | --- | --- |")
        for label, before, after, unit in rows:
            fmt = ms if unit == "ms" else (lambda x, u=unit: f"{x:.3f} %" if u == "%" else
                                           f"{x:.1f} MB" if u == "MB" else f"{x:.2f} s")
            suffix = " ms" if unit == "ms" else ""
            add(f"| {label} | {fmt(before)}{suffix} | {fmt(after)}{suffix} | {ratio(before, after)} |")
        add("")

    # -- the sections ------------------------------------------------------------------

    def snapshot_section(self) -> None:
        speed = self.data("speed")
        if not speed:
            return
        add = self.add
        add("## 1. Snapshot and digest of the watched scope")
        add("")
        add("`fwgate` = `nft.snapshot()` of `ip filter` + `model.digest()`, in-process (the "
            "daemon's path). `nft` = `nft -s list table ip filter`, `iptables-save` = "
            "`iptables-save -t filter`, each a process run in the namespace (their start-up "
            "included: that is what a poller pays). Watched scope = `ip filter` + `ip netbird`. "
            "Medians, ms; before and after interleaved a few runs at a time.")
        add("")
        add("| rules | version | runs | fwgate | of which snapshot | digest | watched scope | "
            "nft -s list table | iptables-save | fwgate / nft |")
        add("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for n, v in sorted(speed["sizes"].items(), key=lambda kv: int(kv[0])):
            for label in ("before", "after"):
                r = v.get(label)
                if not r:
                    continue
                add(f"| {r['rules']} | {label} | {len(r['fwgate'])} | {ms(median(r['fwgate']))} | "
                    f"{ms(median(r['snapshot']))} | {ms(median(r['digest']))} | "
                    f"{ms(median(r['fwgate_watched']))} | {ms(median(r['nft']))} | "
                    f"{ms(median(r['iptables_save']))} | "
                    f"{median(r['fwgate']) / median(r['nft']):.2f} |")
        add("")
        q = speed.get("quiet") or {}
        if "after" in q:
            a = q["after"]
            add("## 2. A quiet probe cycle")
            add("")
            add(f"After: through the public seams, on {a['rules']} rules. A `Machine` whose stage "
                "holds and whose baseline is in is fed `Tick(machine.next_wakeup())` — its "
                "window's end, nothing changed — and a real `Daemon` carries out what it asks "
                "(the `QueryGeneration` on its `NfSocket`: one `NFT_MSG_GETGEN`) and feeds the "
                "`Generation` answer back, until the machine asks for the compat probe (the next "
                "phase). Asked per cycle: " +
                ", ".join(f"{k} {v:g}" for k, v in a.get("asked_per_cycle", {}).items()) +
                f". {len(a['cycle'])} cycles: median {ms(median(a['cycle']))} ms, p95 "
                f"{ms(percentile(a['cycle'], 0.95))} ms, of which in `machine.handle()` "
                f"{ms(median(a['in_machine']))} ms; GETGEN alone {ms(median(a['genid']))} ms. "
                f"Dumps in the cycles: {a['dumps_in_quiet_cycles']}. For scale: the daemon's "
                f"baseline dump + digest took {ms(a['baseline_dump'])} ms.")
            add("")
            if "before" in q:
                b = q["before"]
                add(f"Before: the old checkout's own `bench/inns.py quiet` (it had no public seam "
                    "for this): `GateLoop._confirm()` (GETGEN, drain) + `Gate.decide()` + "
                    f"`_publish()` in the middle of a window, so no stage completes: median "
                    f"{ms(median(b['cycle']))} ms, GETGEN alone {ms(median(b['genid']))} ms, "
                    f"dumps {b['dumps_in_quiet_cycles']}. Not the same work: see the notes.")
                add("")

    def gate_section(self) -> None:
        gate = self.data("gate_overhead")
        if not gate:
            return
        self.add("## 3. Gate overhead")
        self.add("")
        self.add(gate_table(self.runs["gate_overhead"]))
        self.add("")

    def footprint_section(self) -> None:
        foot = self.data("footprint")
        if not foot:
            return
        add = self.add
        add("## 4. Footprint while waiting (10k-rule scope)")
        add("")
        add(f"Side by side in one namespace holding the {foot['rules'] // 1000}k-rule `ip filter`, "
            f"a {foot['window_s']:g} s window, nothing changing. fwgate's stage: `ip netbird` "
            "exists and `ip filter FORWARD` has an iifname wt0 rule; compat warn. fwgate runs "
            "through its checkout's `bench/fwgate_probe.py`; 'in the namespace' = `ip netns "
            "exec NS … run`, as under systemd; '--netns' = `fwgate --netns NS run`. RSS sampled "
            "every 50 ms (the poller's with its running nft child); CPU = utime+stime (+ "
            "waited-for children) over the window from 2 s after the first probe. Start-up = exec "
            "→ first nf_tables query; probed = exec → first STATUS=, sent once the first snapshot "
            f"is in. Medians: {len(foot['waiting']['after']['cpu_pct'])} window(s), "
            f"{len(foot['startup']['after']['startup'])} start-ups each.")
        add("")
        add("| variant | RSS median MB | RSS peak MB | CPU % of a core | start-up ms | probed ms |")
        add("| --- | --- | --- | --- | --- | --- |")
        for name, w in foot["waiting"].items():
            s = foot["startup"][name]
            extra = f" (its nft child alone: {median(w['nft_maxrss']):.1f})" if w["nft_maxrss"] else ""
            label = {"poller": "`bench/poller.py`: `nft -s list ruleset` every second"}.get(
                name, f"fwgate {name.replace(' --netns', '')}, " +
                ("--netns" if name.endswith("--netns") else "in the namespace"))
            add(f"| {label} | {median(w['rss_median']):.1f} | {median(w['rss_max']):.1f}{extra} | "
                f"{median(w['cpu_pct']):.3f} | {ms(median(s['startup'])) if s['startup'] else '-'} | "
                f"{ms(median(s['probed'])) if s['probed'] else '-'} |")
        add("")
        add(f"The interpreter alone starts in {ms(foot['python_start_s'])} ms. Biggest imports of "
            "one start-up (`python -X importtime`, cumulative, top level and their children):")
        add("")
        for label, costs in foot["imports"].items():
            add(f"- {label}: " + ", ".join(f"`{n}` {ms(t)} ms" for n, t in costs))
        add("")

    def bursts_section(self) -> None:
        bursts = self.data("bursts")
        if not bursts:
            return
        add = self.add
        runs = bursts["runs"]
        settle = runs[0]["settle_s"]
        frozen_n = next((r["count"] for r in runs if r["frozen"]), 0)
        add("## 6. Bursts")
        add("")
        add(f"A namespace with {bursts['base_rules']} iptables rules and Netbird's; `fwgate run` "
            f"waits (settle {settle:g} s, watching `ip filter` and `ip netbird`); `bench/burst.py` "
            f"commits {runs[0]['count']} one-rule transactions in about 1 s into `ip netbird`, "
            "round-robin over 200 chains. 'frozen' runs SIGSTOP fwgate for a burst of "
            f"{frozen_n}, so the kernel must drop events (ENOBUFS) on its 8 MiB socket: fwgate must "
            "say so, resync, and still settle only after the last change. Handled/s = "
            "transactions fwgate counted ÷ time from the first commit until its count stopped "
            "moving. Versions alternate, a fresh namespace each run.")
        add("")
        add("| version | run | burst s | transactions | counted | handled/s | caught up after "
            "last commit, ms | resyncs | READY − last change, ms | early? | CPU s |")
        add("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in sorted(runs, key=lambda r: (r["frozen"], r["version"])):
            cpu = "-" if r["cpu_s"] is None else f"{r['cpu_s']:.2f}"
            add(f"| {r['version']} | {'frozen' if r['frozen'] else 'live'} | {r['burst_s']:.2f} | "
                f"{r['count']} | {r['changes_seen']} | {r.get('handled_per_s', 0):.0f} | "
                f"{ms(r['lag_s'])} | {r['resyncs']} | "
                f"{ms(r['ready_after_last_s']) if r['ready'] else 'no READY'} | "
                f"{'YES' if r['early'] else 'no'} | {cpu} |")
        add("")
        add(f"READY − last change is the {settle:g} s window plus the gate's overhead: below "
            f"{settle * 1000:.0f} ms would be early. A frozen run counts fewer changes than it was "
            "sent: the dropped events are the overflow; the resync restarts the window instead.")
        add("")

    def exposure_section(self) -> None:
        names = sorted((n for n in self.runs if n.startswith("exposure-")),
                       key=lambda n: self.runs[n]["data"]["rules"])
        if not names:
            return
        add = self.add
        add("## 7. Exposure window (issue 11)")
        add("")
        add("`bench/exposure.py`: `fwgate guard` on the shipped config in a namespace with a "
            "k3s-sized `ip filter` (the rules of section 1) and an `ip6 filter` a tenth its size; "
            "a Netbird-like agent (`fwgate.programmer --reinit`) re-inits its firewall every "
            "0.25 s, each time writing its native `frwacceptoif` rule (ct state: iptables-nft "
            "cannot parse it) into both filter tables. A third process stamps every transaction "
            "as it reads it: exposure = the commit that added the rule to the commit of the "
            "guard's replacing transaction (same listener, same clock). Netbird writes both "
            "families in one transaction and the guard repairs both in one, so ip and ip6 "
            "coincide. Goal: p95 ≤ 50 ms.")
        add("")
        add("| ip filter rules | re-inits | family | repaired | p50 ms | p95 ms | max ms | "
            "unrepaired | run took s |")
        add("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for name in names:
            e = self.data(name)
            for f in ("ip", "ip6"):
                x = e[f]
                add(f"| {e['rules']} | {e['reinits']} | {f} | {x.get('n', 0)} | "
                    f"{x.get('p50_ms', '-')} | {x.get('p95_ms', '-')} | {x.get('max_ms', '-')} | "
                    f"{e['unrepaired']} | {e['took_s']} |")
        add("")

    def deaths_section(self) -> None:
        d = self.data("deaths")
        if d is None:
            return
        add = self.add
        add("## 10. k3s deaths per Netbird re-init: repair alone against prevention (issue 19)")
        add("")
        add("`bench/deaths.py`: `fwgate guard` on the shipped config in a namespace with a "
            "k3s-sized `ip filter` (section 1's rules; \"0\": kube-router's jump alone), a loop "
            "running kube-router's two fatal calls (`iptables -C FORWARD <its jump>`, `iptables "
            "-S FORWARD`) back to back as fast as they go, and a Netbird-like agent re-initing "
            "its firewall every 2 s. *repair*: it finds no iptables on its PATH and writes its "
            "native ct rule, which the guard re-encodes as soon as it reads the event. "
            "*prevention*: it finds Debian's nf_tables iptables on its PATH (as the package's "
            "Recommends: brings it) and writes through it. A re-init is a death when a fatal "
            "call that ended within a second of it failed as kube-router dies on it. The guard "
            "runs with `WATCHDOG_USEC` of its unit (6 s): the longest silence between its "
            "`WATCHDOG=1` pings says whether systemd would have killed a busy guard.")
        add("")
        add("| ip filter rules | Netbird writes | re-inits | fatal calls | deaths | deaths per "
            "re-init | guard repairs | calls | longest watchdog silence s |")
        add("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in d["runs"]:
            add(f"| {r['rules']} | {'through iptables' if r['prevented'] else 'natively'} | "
                f"{r['reinits']} | {r['fatal_calls']} | {r['deaths']} | "
                f"{r['deaths_per_reinit']:.0%} | {r['repairs']} | {r['calls']} | "
                f"{r['watchdog_max_gap_s']} |")
        add("")
        add("Repair alone loses a race it cannot win: the rule lives a few milliseconds, and a "
            "loop that calls back to back meets it often. The share falls with the table's size "
            "because each call takes longer (iptables reads the whole table: fewer calls fall "
            "into the same window), not because the window shrinks. Prevention gives zero at "
            "every size; the watchdog's silences stay near its 2 s ping period (no false kill "
            "at 50k rules under a 6 s `WatchdogSec=`).")
        add("")

    def marks_section(self) -> None:
        m = self.data("marks_speed")
        if m is None:
            return
        add = self.add
        add("## 9. Mark conflicts (issue 13)")
        add("")
        add(f"`bench/marks_speed.py`: `find_conflicts` on {m['rules']} rules (kube-router pod "
            "firewalls and policies, kube-proxy services, Netbird's tables, built with the real "
            "iptables), beside the dump of `ip`, `ip6` and `inet` it runs on; medians of six "
            "rounds, the first one cold (a fresh guard).")
        add("")
        add("| rules | dump ms | cold ms | warm ms | cold / dump | warm / dump | conflicts |")
        add("| --- | --- | --- | --- | --- | --- | --- |")
        add(f"| {m['rules']} | {m['dump_ms']} | {m['cold_ms']} | {m['warm_ms']} | "
            f"{m['cold_per_dump']} | {m['warm_per_dump']} | {m['conflicts']} "
            f"({', '.join(m['pairs'])}) |")
        add("")
        if "process_per_nft" in m:
            add(f"The command as an operator runs it, on the same node: `fwgate --netns NS "
                f"conflicts --json` (interpreter start, dump, routing rules and marked "
                f"sockets, analysis) against `nft -s list ruleset` (run by `ip netns exec`, "
                f"whose own {m['netns_exec_ms']} ms is taken off), interleaved, medians of "
                f"{m['process_runs']} runs (issue 20).")
            add("")
            add("| fwgate conflicts ms | nft -s list ruleset ms | ratio |")
            add("| --- | --- | --- |")
            add(f"| {m['fwgate_conflicts_ms']} | {m['nft_list_ms']} | {m['process_per_nft']} |")
            add("")

    def k3s_start_section(self) -> None:
        k = self.data("k3s_start")
        if k is None:
            return
        add = self.add
        add("## 8. k3s's start under a real systemd (issue 11)")
        add("")
        add("`bench/k3s_start.py`: the package installed in the systemd container of "
            "`tests/systemd/test_lifecycle.py`, its config unedited (settle "
            f"{k['settle_s']:g} s), the Netbird and k3s stand-ins; k3s's start "
            "(ExecMainStartTimestampMonotonic) minus (Netbird's last change + settle), "
            f"{k['runs']} boot(s) per kind of node. Goal: ≤ 1 s.")
        add("")
        add("| node | median ms | p95 ms | max ms | runs ms |")
        add("| --- | --- | --- | --- | --- |")
        for kind in ("plain", "filter-table-at-boot"):
            x = k[kind]
            add(f"| {kind} | {x['median_ms']} | {x['p95_ms']} | {x['max_ms']} | "
                f"{', '.join(map(str, x['runs_ms']))} |")
        add("")

    def compat_section(self) -> None:
        c = self.runs.get("compat_speed")
        self.add("## 5. Compat verdict")
        self.add("")
        source = (f"its JSON, `{os.path.relpath(self.folder, ROOT)}/compat_speed.json` "
                  f"({c['written']}), and " if c else "")
        self.add(f"Measured by `bench/compat_speed.py`, with its own before/after: see {source}"
                 "`bench/compat.md`.")
        self.add("")

    def differential_section(self) -> None:
        d = self.data("compat_differential")
        if d is None:
            return
        add = self.add
        add("## 11. The reader model against real iptables on generated rules (issue 21)")
        add("")
        add(f"`bench/compat_differential.py --cases {d['drawn']} --seed {d['seed']}`: rules drawn "
            "from the grammar in `tests/fwgate_testing/differential.py`, each in fresh namespaces next to "
            "kube-router's state, judged by each version's binaries (kube-router's fatal calls, "
            "`-S`, `iptables-save`, the save → restore round trip compared expression by "
            "expression) against the reader model alone (`compat.iptables: none`). "
            f"{d['judged']} judged, {d['refused_by_nft']} refused by nft, "
            f"{d['seconds']:.0f} s.")
        add("")
        add("| iptables | cases | agree | % | false ok | false block | ground truth | "
            "written back right | written back not said |")
        add("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for v, x in d["versions"].items():
            truth = ", ".join(f"{k} {n}" for k, n in sorted(x["truth"].items()))
            add(f"| {v} | {x['cases']} | {x['agree']} | {100 * x['agree'] / x['cases']:.1f} | "
                f"{x['false_ok']} | {x['false_block']} | {truth} | "
                f"{x.get('written_back_right', 0)}/{x.get('written_back_said', 0)} | "
                f"{x.get('written_back_unsaid', 0)} |")
        add("")
        add("\"written back\": for each misread rule (truth misread or sync fails) the model "
            "names the whole rule kube-router's restore writes back (`-A CHAIN …`); right = "
            "equal to the line this version's iptables-save wrote, which the restore reads. "
            "A wrong line is a disagreement. Not said: the model gave no line (an interface "
            "by index other than lo, an x_tables match other than comment).")
        add("")
        if d["disagreements"]:
            add("Disagreements left (each is a case in `tests/netns/test_compat_generated.py`):")
            add("")
            for x in d["disagreements"][:20]:
                per = "; ".join(f"{v}: truth {y['truth']}, model {y['model']}"
                                for v, y in x["versions"].items())
                add(f"- `{x['case']}` — {per}")
            add("")

    def notes(self) -> None:
        path = os.path.join(self.folder, "notes.md")
        if os.path.exists(path):
            with open(path) as fh:
                self.add(fh.read().strip())
            self.add("")

    def profiles(self) -> None:
        speed = self.data("speed")
        written = (speed or {}).get("profiles") or {}
        if not written:
            return
        self.add("## Profiles")
        self.add("")
        self.add("pyinstrument (not a dependency: `pip install --target DIR pyinstrument`, DIR on "
                 "PYTHONPATH), three `ip filter` snapshots + digests at 10k rules, each version by "
                 "its own `bench/inns.py profile`: " +
                 ", ".join(f"{label}: `{path}`" for label, path in written.items()) + ".")
        self.add("")

    def render(self) -> str:
        self.head()
        self.targets()
        self.notes()
        self.before_after()
        self.snapshot_section()
        self.gate_section()
        self.footprint_section()
        self.compat_section()
        self.bursts_section()
        self.exposure_section()
        self.k3s_start_section()
        self.marks_section()
        self.deaths_section()
        self.differential_section()
        self.profiles()
        return "\n".join(self.lines).rstrip() + "\n"


def gate_table(run: dict) -> str:
    g = run["data"]
    samples = g["overhead_ms"]
    names = {"after": "fwgate (after)", "before": "fwgate (before)", POLLING: POLLING}
    rows = [f"| {names.get(k, k)} | {median(v):.1f} | {percentile(v, 0.95):.1f} | {min(v):.1f} | "
            f"{max(v):.1f} |" for k, v in samples.items()]
    poll_ratio = median(samples[POLLING]) / max(median(samples["after"]), 1e-3)
    return "\n".join([
        f"Gate overhead = READY − (last rule change + settle), {g['runs']} runs each, settle "
        f"{g['settle_s']:g} s, the Netbird-like programmer's bursts {g['pause_s']:g} s apart, "
        f"each run in a fresh namespace, methods alternating; measured {run['written']} "
        f"(`{run['script']}`) on a shared machine: {run['machine']}.",
        "",
        "| method | median ms | p95 ms | min ms | max ms |",
        "| --- | --- | --- | --- | --- |",
        *rows,
        "",
        f"Polling's median overhead is {poll_ratio:.0f}× fwgate's. Targets: fwgate's median "
        "under 20 ms, p95 under 50 ms.",
    ])


def write_readme(path: str, runs: dict) -> None:
    if "gate_overhead" not in runs:
        return
    with open(path) as fh:
        text = fh.read()
    if BEGIN not in text:
        return
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(path, "w") as fh:
        fh.write(f"{head}{BEGIN}\n{gate_table(runs['gate_overhead'])}\n{END}{tail}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default=RESULTS)
    parser.add_argument("--out", default=os.path.join(BENCH, "results.md"))
    parser.add_argument("--readme", default=os.path.join(BENCH, "README.md"),
                        help="'none': leave README.md alone")
    args = parser.parse_args()
    runs = load(args.results)
    if not runs:
        print(f"report: no JSON in {args.results}", file=sys.stderr)
        return 1
    with open(args.out, "w") as fh:
        fh.write(Report(runs, os.path.abspath(args.results)).render())
    if args.readme != "none":
        write_readme(args.readme, runs)
    print(f"wrote {os.path.relpath(args.out, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
