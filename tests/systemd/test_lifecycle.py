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
from pathlib import Path

import pytest

from container import Container, journal, mono, programmer_changes, show, wait_for
from debs import apt, node_binds, use_archive

pytestmark = pytest.mark.systemd

ROOT = Path(__file__).resolve().parents[2]
SETTLE = 5.0                       # the shipped config's
AUX = "/var/lib/rancher/k3s/data/e2e/bin/aux"
NETBIRD_UNIT = """\
[Unit]
Description=Netbird stand-in (fwgate lifecycle tests)

[Service]
Type=simple
SyslogIdentifier=netbird
# No wireguard or dummy module in this kernel: a veth pair plays wt0.
ExecStartPre=/bin/sh -c 'ip link show wt0 >/dev/null 2>&1 || ip link add wt0 type veth peer name wt0p; ip link set wt0p up && ip link set wt0 up'
# Prints "CLOCK_MONOTONIC what" per committed change. SIGHUP: a firewall re-init.
ExecStart=/usr/bin/python3 -m fwgate.programmer --pause 1 --serve
ExecReload=/bin/sh -c 'kill -HUP $$MAINPID'
ExecStopPost=/usr/bin/python3 -m fwgate.programmer --flush
ExecStopPost=-/sbin/ip link del wt0
"""
K3S_UNIT = f"""\
[Unit]
Description=k3s stand-in: kube-router's iptables calls (fwgate lifecycle tests)

[Service]
Type=notify
NotifyAccess=all
SyslogIdentifier=k3s
# k3s's PATH: its data bin, the host's, then bin/aux with its bundled iptables.
Environment=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:{AUX}
Environment=SYNC=2
ExecStart=/bin/sh /usr/local/lib/fwgate-tests/kube-router-standin.sh
Restart=always
RestartSec=5s
"""
# Something on the node that made iptables' filter table at boot, with k3s's iptables.
FILTER_AT_BOOT = f"""\
[Unit]
Description=iptables' filter table at boot (fwgate lifecycle tests)
Before=netbird.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'for c in INPUT FORWARD OUTPUT; do {AUX}/iptables -P $$c ACCEPT; done'
"""


# --- the node ----------------------------------------------------------------------

def plain_node(c: Container, deb: Path) -> None:
    """The package, a plain k3s node's iptables (bundled only), the stand-ins. The
    container binds debs.node_binds(): the package's dependencies come from there."""
    use_archive(c)
    apt(c, "install", str(deb))
    # k3s's bundled iptables is one static multi-call binary; here Debian's, with its
    # extensions copied beside it (they belong to the iptables package removed below).
    script = f"""set -e
        mkdir -p {AUX}
        cp /usr/sbin/xtables-nft-multi {AUX}/
        cp -a /usr/lib/x86_64-linux-gnu/xtables {AUX}/../xtables
        for t in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
            printf '#!/bin/sh\\nXTABLES_LIBDIR={AUX}/../xtables exec {AUX}/xtables-nft-multi %s "$@"\\n' \\
                $t > {AUX}/$t
            chmod 0755 {AUX}/$t
        done
        # k3s brings its own iptables: the host has none (Netbird finds none).
        dpkg --remove --force-depends iptables >/dev/null 2>&1
        mkdir -p /usr/local/lib/fwgate-tests
    """
    c.run(["sh", "-c", script])
    c.write_file("/usr/local/lib/fwgate-tests/kube-router-standin.sh",
                 (ROOT / "tests/systemd/e2e/kube-router-standin.sh").read_text())
    c.write_file("/etc/systemd/system/netbird.service", NETBIRD_UNIT)
    c.write_file("/etc/systemd/system/k3s.service", K3S_UNIT)
    c.run(["systemctl", "daemon-reload"])
    assert c.run(["sh", "-c", "command -v iptables"], check=False).returncode != 0


def boot(c: Container) -> dict:
    """What a boot does for these units: start k3s (it pulls in the gate, the gate
    Netbird). Returns k3s's and the gate's timestamps."""
    c.run(["systemctl", "start", "k3s.service"], timeout=120)
    return {"k3s": mono(c, "k3s", "ExecMainStartTimestampMonotonic"),
            "ready": mono(c, "fwgate", "ActiveEnterTimestampMonotonic")}






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
        wait_for("the re-init's bursts", lambda: len(programmer_changes(c)) >= before + 5)
        time.sleep(apart)


def guard_status(c: Container) -> dict:
    return json.loads(c.run(["fwgate", "status", "--json"]).stdout)["guard"]


@pytest.fixture
def node(container_factory, debs) -> Container:
    c = container_factory(binds_ro=node_binds([debs["X"], debs["X+1"]]))
    plain_node(c, debs["X"])
    return c


# --- boot ---------------------------------------------------------------------------

def late(times: dict, changes: list[tuple[float, str]]) -> float:
    """How late k3s started: its start - (Netbird's last change + settle)."""
    return times["k3s"] - (changes[-1][0] + SETTLE)


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
    # kube-router's restores strip Netbird's tags: copies pile up, reported, not deleted.
    # (ip filter changes at every sync: the guard checks within 3 windows anyway.)
    state = wait_for("the guard to count the untagged copies",
                     lambda: (lambda s: s if s["netbird_untagged_copies"] >= 1 else None)(
                         guard_status(node)), timeout=3 * SETTLE + 10)


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
