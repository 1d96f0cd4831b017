"""A Netbird + k3s node's whole life under a real systemd, with the package as
installed and its config unedited (see DESIGN 1b):

- a plain k3s node: k3s brings its own iptables, nothing makes iptables' `filter`
  table before k3s does, Debian's iptables is not installed, so Netbird (which
  finds no iptables on its PATH) writes its native rules only at its first
  firewall re-init after k3s is up;
- a node where iptables' `filter` table exists at boot: Netbird writes its
  crash-prone rule before k3s starts.

The stand-ins: netbird.service runs the package's Netbird-like programmer (a
firewall re-init on every `systemctl reload`); k3s.service runs kube-router's
start-up and policy-sync iptables calls every 2 s with k3s's bundled iptables,
and dies (exit 255, like klog.Fatalf) on the first fatal one. Every timestamp
is CLOCK_MONOTONIC (the container shares the host's clock).
"""
from __future__ import annotations

import json
import time

import pytest

from fwgate_testing.node.container import Container, journal, mono, programmer_changes, show, wait_for
from fwgate_testing.node.debs import apt, node_binds
from fwgate_testing.node.lifecycle import (
    AUX, FILTER_AT_BOOT, SETTLE, boot, late, plain_node,
)

pytestmark = pytest.mark.systemd


# --- what the node says ---------------------------------------------------------------

def said(c: Container, unit: str) -> str:
    return "\n".join(str(e.get("MESSAGE")) for e in journal(c, unit))


def events(c: Container, unit: str) -> list[dict]:
    return [e for e in journal(c, unit) if "FWGATE_EVENT" in e]


def logs(c: Container) -> str:
    return c.run(["journalctl", "-u", "netbird", "-u", "fwgate", "-u", "fwgate-guard", "-u",
                  "k3s", "-o", "short-monotonic", "--no-pager"], check=False).stdout[-8000:]


def k3s_alive(c: Container) -> dict[str, str]:
    return show(c, "k3s", "MainPID", "NRestarts", "ActiveState", "InvocationID")


def reinit_netbird(c: Container, times: int, apart: float = 3.0) -> None:
    """Netbird's firewall re-inits (restart, `netbird up`, a route change ...)."""
    for _ in range(times):
        before = len(programmer_changes(c))
        c.run(["systemctl", "reload", "netbird.service"])
        try:
            wait_for("the re-init's bursts", lambda: len(programmer_changes(c)) >= before + 5)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{logs(c)}") from None
        time.sleep(apart)


def guard_status(c: Container) -> dict:
    return fwgate_status(c)[1]["guard"]


def fwgate_status(c: Container) -> tuple[int, dict]:
    """`fwgate status --json`: its exit code and its report."""
    r = c.run(["fwgate", "status", "--json"], check=False)
    return r.returncode, json.loads(r.stdout)


def native_rules(c: Container) -> int:
    """Rules in ip filter carrying Netbird's raw tag: written natively."""
    out = c.run(["nft", "--debug=netlink", "list", "table", "ip", "filter"], check=False).stdout
    return sum(out.count(tag) for tag in ("frwacceptiif", "frwacceptoif", "inputaccept"))


@pytest.fixture
def node(container_factory, debs) -> Container:
    c = container_factory(binds_ro=node_binds([debs["X"], debs["X+1"]]))
    plain_node(c, debs["X"])
    return c


# --- boot ---------------------------------------------------------------------------

def test_plain_node_boots_without_stalling(node: Container):
    times = boot(node)
    changes = programmer_changes(node)
    why = logs(node)
    # Netbird wrote nothing into ip filter (there was none); the gate did not wait
    # for a chain a plain node does not have.
    assert "burst_filter" in [what for _, what in changes], why
    assert 0.0 <= late(times, changes) <= 1.0, (late(times, changes), why)
    assert times["ready"] <= times["k3s"]
    assert k3s_alive(node)["ActiveState"] == "active"
    print(f"plain node: k3s started {late(times, changes) * 1000:.1f} ms after "
          f"Netbird's last change + settle")


def test_filter_table_at_boot_is_repaired_before_k3s(node: Container):
    node.write_file("/etc/systemd/system/filter-at-boot.service", FILTER_AT_BOOT)
    node.run(["systemctl", "daemon-reload"])
    node.run(["systemctl", "start", "filter-at-boot.service"])
    times = boot(node)
    changes = programmer_changes(node)
    why = logs(node)
    kinds = [e["FWGATE_EVENT"] for e in events(node, "fwgate.service")]
    assert kinds[-1] == "ready", (kinds, why)
    # Gate and guard both repair at once: whichever reads the event first does it.
    repaired = [int(e["__MONOTONIC_TIMESTAMP"]) / 1e6
                for unit in ("fwgate.service", "fwgate-guard.service")
                for e in events(node, unit) if e["FWGATE_EVENT"] == "repaired"]
    assert repaired and min(repaired) < times["k3s"], (repaired, times, why)
    assert 0.0 <= late(times, changes) <= 1.0, (late(times, changes), why)
    assert "kube-router: F:" not in said(node, "k3s"), why
    alive = k3s_alive(node)
    assert alive["ActiveState"] == "active" and alive["NRestarts"] == "0", (alive, why)
    print(f"filter table at boot: k3s started {late(times, changes) * 1000:.1f} ms after "
          f"Netbird's last change + settle")


# --- the rest of its life ------------------------------------------------------------

def test_netbird_reinits_never_kill_k3s(node: Container):
    boot(node)
    before = k3s_alive(node)
    reinit_netbird(node, 5)
    why = logs(node)
    syncs = said(node, "k3s").count("kube-router: sync")
    assert syncs >= 5, why  # kube-router ran its fatal calls throughout
    assert "kube-router: F:" not in said(node, "k3s"), why
    assert k3s_alive(node) == before, why  # zero deaths: same process, no restart
    guard = events(node, "fwgate-guard.service")
    repaired = [e for e in guard if e["FWGATE_EVENT"] == "repaired"]
    assert len(repaired) >= 5 and all("frwacceptoif" in e["MESSAGE"] for e in repaired), why
    # The root cause, named from what systemd says about netbird.service.
    fallback = [e["MESSAGE"] for e in guard if e["FWGATE_EVENT"] == "native-fallback"]
    assert fallback and "no iptables on netbird.service's PATH" in fallback[0], why
    state = guard_status(node)
    assert state["running"] and state["phase"] == "guarding", state
    assert state["repairs_total"] >= 5 and state["netbird_fallback"], state
    # kube-router's restores strip Netbird's tags; the copies left behind the next
    # tagged rule are never reached, and the guard deletes them (ip filter changes at
    # every sync: the guard checks within 3 windows anyway).
    state = wait_for("the guard to delete dead copies",
                     lambda: (lambda s: s if s["netbird_copies_removed_total"] >= 1 else None)(
                         guard_status(node)), timeout=3 * SETTLE + 10)
    removed = [e for e in events(node, "fwgate-guard.service") if e["FWGATE_EVENT"] == "removed"]
    assert removed and "dead copies" in removed[0]["MESSAGE"], why


def test_a_crashing_guard_leaves_k3s_alone(node: Container):
    boot(node)
    before = k3s_alive(node)
    guard = show(node, "fwgate-guard", "MainPID", "NRestarts")
    node.run(["systemctl", "kill", "--signal=SIGSEGV", "fwgate-guard.service"])
    wait_for("the guard to come back", lambda: (lambda g: g["ActiveState"] == "active" and
                                                g["MainPID"] not in ("0", guard["MainPID"]))(
        show(node, "fwgate-guard", "ActiveState", "MainPID")))
    assert show(node, "fwgate-guard", "NRestarts")["NRestarts"] == str(int(guard["NRestarts"]) + 1)
    assert k3s_alive(node) == before, logs(node)
    # ... and the new guard guards: the next re-init is repaired, k3s lives on.
    reinit_netbird(node, 1)
    assert "kube-router: F:" not in said(node, "k3s"), logs(node)
    assert k3s_alive(node) == before


def test_upgrade_and_removal_leave_k3s_untouched(node: Container, debs):
    boot(node)
    before = k3s_alive(node)
    gate = show(node, "fwgate", "InvocationID", "ActiveState")

    apt(node, "install", str(debs["X+1"]))
    assert k3s_alive(node) == before, logs(node)
    assert show(node, "fwgate", "InvocationID", "ActiveState") == gate
    new = debs["X+1"].name.split("_")[1].rsplit("-", 1)[0]
    wait_for("the new guard", lambda: guard_status(node).get("version") == new)
    reinit_netbird(node, 1)  # guarded by the new version
    assert k3s_alive(node) == before, logs(node)

    apt(node, "remove", "fwgate")
    assert k3s_alive(node) == before, logs(node)
    assert show(node, "fwgate-guard", "ActiveState")["ActiveState"] == "inactive"
    props = show(node, "k3s.service", "Requires", "After")
    assert "fwgate" not in props["Requires"], props


# --- prevention and honest health (never report healthy while k3s is exposed) ------

def check(c: Container) -> tuple[int, str]:
    r = c.run(["fwgate", "check"], check=False)
    return r.returncode, r.stdout + r.stderr


def test_default_install_prevents_the_native_rule(container_factory, debs):
    """Installed the default way (Recommends: iptables), the Netbird-like agent finds an
    nf_tables iptables on its PATH and writes through it, as Netbird does: no native
    rule, no repair, no untagged copy, after 10 re-inits under kube-router's syncs."""
    c = container_factory(binds_ro=node_binds([debs["X"]]))
    plain_node(c, debs["X"], host_iptables=True)
    boot(c)
    before = k3s_alive(c)
    reinit_netbird(c, 10, apart=1.0)
    why = logs(c)
    assert native_rules(c) == 0, why
    assert "kube-router: F:" not in said(c, "k3s") and k3s_alive(c) == before, why
    guard = events(c, "fwgate-guard.service")
    assert not [e for e in guard if e["FWGATE_EVENT"] in ("repaired", "native-fallback")], why
    saved = c.run(["iptables-save", "-t", "filter"]).stdout
    assert saved.count("-A FORWARD -o wt0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT") == 1, saved
    assert saved.count("-A INPUT -i wt0 -j ACCEPT") == 1, saved
    prevented = [e["MESSAGE"] for e in guard if e["FWGATE_EVENT"] == "prevention"]
    assert prevented and prevented[0].startswith("prevention in force"), why
    code, report = fwgate_status(c)
    assert code == 0 and report["prevention"]["in_force"], report
    assert report["guard"]["netbird_untagged_copies"] == 0, report["guard"]
    code, text = check(c)
    assert code == 0 and "prevention: in force" in text and "result: all good" in text, text


def test_guard_stopped_then_a_reinit_is_no_longer_all_good(node: Container):
    boot(node)
    node.run(["systemctl", "stop", "k3s.service"])  # so nothing restarts the guard meanwhile
    node.run(["systemctl", "stop", "fwgate-guard.service"])
    reinit_netbird(node, 1, apart=0.5)
    assert native_rules(node) >= 1, logs(node)
    code, text = check(node)
    assert code == 3, text
    assert "not re-encoded yet" in text and "all good" not in text, text
    assert "prevention: NOT in force" in text, text
    code, report = fwgate_status(node)
    assert code == 1 and not report["ok"], report
    assert any("fwgate-guard.service is inactive" in p for p in report["problems"]), report
    assert not report["prevention"]["in_force"], report
    text = node.run(["fwgate", "status"], check=False).stdout
    assert text.startswith("PROBLEM: fwgate-guard.service is inactive"), text
    # Starting k3s starts the guard (Wants=), which repairs at once. k3s does not wait for
    # it (no After=: boots are not delayed by the guard's first check), so this start may
    # meet the rule first and crash once; k3s's Restart= brings it back, repaired.
    node.run(["systemctl", "start", "k3s.service"], check=False, timeout=120)
    wait_for("the guard back", lambda: show(node, "fwgate-guard", "ActiveState")["ActiveState"]
             == "active")
    wait_for("the repair", lambda: check(node)[0] == 0, timeout=30)
    wait_for("k3s up", lambda: k3s_alive(node)["ActiveState"] == "active", timeout=30)
    assert fwgate_status(node)[0] == 0, fwgate_status(node)


def test_a_broken_config_never_costs_the_guard(node: Container):
    boot(node)
    guard = show(node, "fwgate-guard", "MainPID")["MainPID"]
    good = node.read_file("/etc/fwgate.yaml")
    assert "\nsettle: 5s\n" in good
    node.write_file("/etc/fwgate.yaml", good.replace("\nsettle: 5s\n", "\nsettle: 5x\n"), 0o644)
    # A reload checks the file first: it fails, and nothing changes.
    r = node.run(["systemctl", "reload", "fwgate-guard.service"], check=False)
    assert r.returncode != 0, r
    assert show(node, "fwgate-guard", "MainPID", "ActiveState") == \
        {"MainPID": guard, "ActiveState": "active"}
    assert node.run(["systemctl", "reload", "fwgate.service"], check=False).returncode != 0
    # A restart (an upgrade's try-restart, say) still guards: with the last good config.
    node.run(["systemctl", "restart", "fwgate-guard.service"], timeout=120)
    assert show(node, "fwgate-guard", "ActiveState")["ActiveState"] == "active"
    said_ = said(node, "fwgate-guard.service")
    assert "settle: '5x'" in said_ and "guarding with /var/lib/fwgate/last-good.yaml" in said_, said_
    code, report = fwgate_status(node)
    assert code == 1 and any("ignores a bad config" in p for p in report["problems"]), report
    before = k3s_alive(node)
    reinit_netbird(node, 1)
    assert "kube-router: F:" not in said(node, "k3s") and k3s_alive(node) == before, logs(node)
    # Fixed: a reload takes it, status is whole again; the gate, long exited, reloads too.
    node.write_file("/etc/fwgate.yaml", good, 0o644)
    node.run(["systemctl", "reload", "fwgate-guard.service"])
    node.run(["systemctl", "reload", "fwgate.service"])
    wait_for("status to be whole", lambda: fwgate_status(node)[0] == 0, timeout=15)


def test_the_guard_killed_a_dozen_times_comes_back(node: Container):
    boot(node)
    before = k3s_alive(node)
    for _ in range(12):
        pid = show(node, "fwgate-guard", "MainPID")["MainPID"]
        node.run(["systemctl", "kill", "--signal=SIGKILL", "fwgate-guard.service"])
        wait_for("a new guard", lambda: (lambda g: g["ActiveState"] == "active" and
                                         g["MainPID"] not in ("0", pid))(
            show(node, "fwgate-guard", "ActiveState", "MainPID")), timeout=15)
    assert int(show(node, "fwgate-guard", "NRestarts")["NRestarts"]) >= 12
    assert k3s_alive(node) == before
    reinit_netbird(node, 1)
    assert "kube-router: F:" not in said(node, "k3s"), logs(node)


def test_a_hung_guard_is_replaced_within_seconds(node: Container):
    boot(node)
    before = k3s_alive(node)
    pid = show(node, "fwgate-guard", "MainPID")["MainPID"]
    node.run(["systemctl", "kill", "--signal=SIGSTOP", "fwgate-guard.service"])
    hung = time.monotonic()
    wait_for("the watchdog to replace the guard", lambda: (lambda g: g["ActiveState"] == "active"
             and g["MainPID"] not in ("0", pid))(show(node, "fwgate-guard", "ActiveState",
                                                     "MainPID")), timeout=20)
    took = time.monotonic() - hung
    assert took < 10.0, took  # WatchdogSec=6s, RestartSec=1s, the new guard's first check
    assert show(node, "fwgate-guard", "Result")["Result"] in ("watchdog", "success"), logs(node)
    assert k3s_alive(node) == before
    print(f"a hung guard was replaced after {took:.1f} s")


CRASH_ONCE = """\
# Test only: the gate raises once (an internal error), then runs as it should.
import os
MARK = "/run/fwgate/crashed-once"
if not os.path.exists(MARK):
    import fwgate.daemon
    def crash(self):
        open(MARK, "w").close()
        raise RuntimeError("a bug")
    fwgate.daemon.Daemon.run = crash
"""


def test_a_gate_that_raises_is_retried_and_k3s_starts(node: Container):
    node.write_file("/usr/local/lib/fwgate-crash/sitecustomize.py", CRASH_ONCE)
    node.write_file("/etc/systemd/system/fwgate.service.d/crash.conf",
                    "[Service]\nEnvironment=PYTHONPATH=/usr/local/lib/fwgate-crash\n")
    node.run(["systemctl", "daemon-reload"])
    boot(node)
    why = logs(node)
    # Started over in place (systemd 252 fails a waiting k3s job at the gate's first exit).
    assert "internal error: RuntimeError: a bug; starting the gate over (1/3)" in \
        said(node, "fwgate.service"), why
    assert k3s_alive(node)["ActiveState"] == "active", why
    assert show(node, "fwgate", "ActiveState")["ActiveState"] == "active", why


def test_a_node_without_netbird_is_not_held(container_factory, debs):
    c = container_factory(binds_ro=node_binds([debs["X"]]))
    plain_node(c, debs["X"], netbird=False)
    started = time.monotonic()
    times = boot(c)
    why = logs(c)
    gate_start = mono(c, "fwgate", "ExecMainStartTimestampMonotonic")
    assert times["k3s"] - gate_start < 1.0, (times, gate_start, why)
    assert time.monotonic() - started < 10, why
    skipped = [e["MESSAGE"] for e in events(c, "fwgate.service")
               if e["FWGATE_EVENT"] == "stage-skipped"]
    assert len(skipped) == 3 and "netbird.service is not installed" in skipped[0], why
    code, report = fwgate_status(c)
    assert code == 0 and report["prevention"]["state"] == "no-netbird", report


def test_fwgate_prevent_gives_netbird_an_nftables_iptables(container_factory, debs):
    """Where the host's iptables is legacy (its alternative) Netbird cannot use it and
    writes natively: `fwgate prevent` links an nf_tables iptables first on its PATH,
    reversibly."""
    c = container_factory(binds_ro=node_binds([debs["X"]]))
    plain_node(c, debs["X"], host_iptables=True)
    c.run(["update-alternatives", "--set", "iptables", "/usr/sbin/iptables-legacy"])
    # k3s keeps to its bundled nf_tables iptables (--prefer-bundled-bin).
    c.write_file("/etc/systemd/system/k3s.service.d/bundled.conf",
                 f"[Service]\nEnvironment=PATH={AUX}:/usr/sbin:/usr/bin:/sbin:/bin\n")
    c.run(["systemctl", "daemon-reload"])
    boot(c)
    reinit_netbird(c, 1, apart=1.0)

    def repairs() -> int:
        return len([e for e in events(c, "fwgate-guard.service") if e["FWGATE_EVENT"] == "repaired"])
    assert repairs() >= 1, logs(c)  # native, repaired
    code, text = check(c)
    assert "prevention: NOT in force" in text and "legacy mode" in text, text
    r = c.run(["fwgate", "prevent"])
    assert "prevention in force" in r.stdout, r.stdout
    started = len(programmer_changes(c))
    c.run(["systemctl", "restart", "netbird.service"])
    wait_for("netbird's start", lambda: len(programmer_changes(c)) >= started + 4)
    assert native_rules(c) == 0, logs(c)  # its close deleted them, its start wrote none
    before = repairs()
    reinit_netbird(c, 2, apart=1.0)
    assert repairs() == before and native_rules(c) == 0, logs(c)
    assert "kube-router: F:" not in said(c, "k3s"), logs(c)
    assert fwgate_status(c)[1]["prevention"]["in_force"]
    r = c.run(["fwgate", "prevent", "--undo"])
    assert "removed" in r.stdout and "legacy mode" in r.stdout, r.stdout
    assert c.run(["test", "-e", "/etc/systemd/system/netbird.service.d/50-fwgate-iptables.conf"],
                 check=False).returncode == 1
