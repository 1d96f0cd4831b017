"""fwgate under a real systemd: the shipped units gate a k3s stand-in behind a
Netbird stand-in, in a throw-away container (see README.md here).

Installed as a package would: fwgate.service and the k3s drop-ins under
/usr/lib/systemd/system, /usr/bin/fwgate; the stand-ins (tests/systemd/e2e/)
where their own installers put them, /etc/systemd/system. Every timestamp
compared here is CLOCK_MONOTONIC: systemd's *TimestampMonotonic (µs), the
programmer's "SECONDS burst" lines, journal __MONOTONIC_TIMESTAMP and this
process's time.monotonic() (the container shares the host's clock).
"""
from __future__ import annotations

import re
import time

import pytest

from fwgate_testing.node.container import Container, mono, show, wait_for
from fwgate_testing.node.e2e import (
    BURSTS, CONFIG, KUBE_ROUTER_C, SETTLE, SLACK, UNITS, events, install, logs, said,
    start_fwgate_alone, status, wait_changes, without_guard, write_config,
)

pytestmark = pytest.mark.systemd


@pytest.fixture
def node(container: Container) -> Container:
    install(container)
    return container


# --- the units themselves -------------------------------------------------------

def test_units_load_clean_and_hook_into_k3s(node: Container):
    for unit in ("fwgate.service", "fwgate-guard.service"):
        verify = node.run(["systemd-analyze", "verify", f"{UNITS}/{unit}"], check=False)
        assert verify.returncode == 0 and unit not in verify.stderr, verify.stderr
    node.write_file("/etc/systemd/system/k3s-agent.service",
                    "[Service]\nType=notify\nExecStart=/bin/sleep infinity\n")
    node.run(["systemctl", "daemon-reload"])
    for unit in ("k3s.service", "k3s-agent.service"):
        props = show(node, unit, "Requires", "After", "DropInPaths")
        assert "fwgate.service" in props["Requires"].split(), props
        assert "fwgate.service" in props["After"].split(), props
        assert props["DropInPaths"] == f"{UNITS}/{unit}.d/10-fwgate.conf", props
    props = show(node, "fwgate.service", "Before", "After", "Wants", "UnitFileState", "WantedBy")
    assert {"k3s.service", "k3s-agent.service"} <= set(props["Before"].split())
    assert "netbird.service" in props["After"].split()
    assert "netbird.service" in props["Wants"].split()
    assert props["UnitFileState"] == "enabled"
    assert set(props["WantedBy"].split()) == {"k3s.service", "k3s-agent.service"}
    # The guard: k3s wants it (starting k3s starts it) and nothing more, it depends on
    # nothing, it starts late, and it is never given up on.
    guard = show(node, "fwgate-guard.service", "After", "Requires", "Wants", "RequiredBy",
                 "WantedBy", "Restart", "StartLimitIntervalUSec")
    assert {"fwgate.service", "netbird.service"} <= set(guard["After"].split()), guard
    assert (guard["RequiredBy"], guard["Restart"]) == ("", "always"), guard
    assert guard["StartLimitIntervalUSec"] in ("0", "infinity"), guard
    for unit in ("k3s.service", "k3s-agent.service"):
        props = show(node, unit, "Requires", "Wants", "BindsTo", "PartOf", "After")
        assert "fwgate-guard.service" in props.pop("Wants").split(), props
        assert "fwgate-guard" not in " ".join(props.values()), props
    # The sandboxes as systemd itself rates the loaded units (docs/systemd.md quotes them).
    for unit in ("fwgate.service", "fwgate-guard.service"):
        out = node.run(["systemd-analyze", "security", unit]).stdout
        exposure = float(re.search(rf"Overall exposure level for {re.escape(unit)}: ([\d.]+)",
                                   out)[1])
        assert exposure <= 2.0, out


# --- 1. boot order and the settle window ------------------------------------------

def test_k3s_starts_after_netbird_settled(node: Container):
    node.run(["systemctl", "start", "k3s.service"], check=False)  # the verdict is test 3's
    netbird_up = mono(node, "netbird", "ActiveEnterTimestampMonotonic")
    fwgate_started = mono(node, "fwgate", "ExecMainStartTimestampMonotonic")
    ready = mono(node, "fwgate", "ActiveEnterTimestampMonotonic")
    k3s_started = mono(node, "k3s", "ExecMainStartTimestampMonotonic")
    done = wait_changes(node, BURSTS)
    last_change = done[-1][0]
    why = f"netbird {netbird_up} fwgate {fwgate_started}..{ready} k3s {k3s_started} " \
          f"changes {done}\n{logs(node)}"

    assert 0 < netbird_up <= fwgate_started < ready < k3s_started, why
    # The test means something only if rules were still changing while fwgate ran.
    assert fwgate_started < last_change, why
    # Never early: quiet for the whole window after the last change ...
    assert ready >= last_change + SETTLE - SLACK, why
    # ... and event-driven, so not much later either.
    assert ready <= last_change + SETTLE + 1.5, why
    assert show(node, "fwgate", "StatusText")["StatusText"].startswith("ready"), why
    # fwgate exits just after READY=1, maybe after k3s has started; the unit stays up.
    wait_for("fwgate to exit", lambda: show(node, "fwgate", "SubState")["SubState"] == "exited")
    state = status(node)
    assert state["phase"] == "ready" and state["ready_at"] and not state["running"], state


# --- 2. the unit stage, over D-Bus -------------------------------------------------

def test_unit_stage_without_dbus_is_one_line_exit_4(node: Container):
    r = node.run(["env", "DBUS_SYSTEM_BUS_ADDRESS=unix:path=/nonexistent", "fwgate", "run"],
                 check=False, timeout=20)
    assert r.returncode == 4, r
    assert r.stderr.startswith("fwgate: cannot watch netbird.service over the system D-Bus: ")
    assert r.stderr.count("\n") == 1, r.stderr


def test_unit_stage_waits_for_netbird_over_dbus(node: Container):
    # Far below fwgate's wait: only its EXTEND_TIMEOUT_USEC keep-alive saves it.
    # (Not lower: python must get to its first keep-alive, slower under load.)
    node.write_file("/etc/systemd/system/fwgate.service.d/timeout.conf",
                    "[Service]\nTimeoutStartSec=3s\n")
    node.run(["systemctl", "daemon-reload"])
    start_fwgate_alone(node)
    pid = show(node, "fwgate", "MainPID")["MainPID"]
    started = mono(node, "fwgate", "ExecMainStartTimestampMonotonic")
    wait_for("2x TimeoutStartSec to pass", lambda: time.monotonic() > started + 6.0)
    props = show(node, "fwgate", "ActiveState", "SubState", "MainPID", "NRestarts")
    assert props == {"ActiveState": "activating", "SubState": "start", "MainPID": pid,
                     "NRestarts": "0"}, logs(node)
    assert show(node, "netbird", "ActiveState")["ActiveState"] == "inactive"

    node.run(["systemctl", "start", "netbird.service"])
    netbird_up = mono(node, "netbird", "ActiveEnterTimestampMonotonic")
    node.run(["systemctl", "start", "--job-mode=ignore-requirements", "fwgate.service"],
             timeout=30)
    assert show(node, "fwgate", "ActiveState")["ActiveState"] == "active"
    held = [e for e in events(node)
            if e["FWGATE_EVENT"] == "stage-held" and e["FWGATE_STAGE"] == "netbird"]
    assert held, logs(node)
    noticed = int(held[0]["__MONOTONIC_TIMESTAMP"]) / 1e6
    # Told by systemd's PropertiesChanged signal, not found by polling.
    assert netbird_up <= noticed <= netbird_up + 2.0, logs(node)


# --- 3. Netbird's crash-prone encoding: fail or repair ------------------------------

def test_incompatible_rules_fail_closed(node: Container):
    write_config(node, CONFIG.format(policy="fail"))
    r = node.run(["systemctl", "start", "k3s.service"], check=False)
    assert r.returncode != 0 and "A dependency job for k3s.service failed" in r.stderr, r
    fw = show(node, "fwgate", "ActiveState", "ExecMainStatus", "NRestarts", "StatusText")
    assert fw["ActiveState"] == "failed" and fw["ExecMainStatus"] == "3", (fw, logs(node))
    assert fw["NRestarts"] == "0" and "cannot read" in fw["StatusText"], fw
    # Requires=: k3s was never started, so kube-router never met the rule.
    k3s = show(node, "k3s", "ActiveState", "ExecMainStartTimestampMonotonic")
    assert k3s == {"ActiveState": "inactive", "ExecMainStartTimestampMonotonic": "0"}, k3s
    assert any(e["FWGATE_EVENT"] == "incompatible" for e in events(node))
    state = status(node)  # kept after the failure: RuntimeDirectoryPreserve=yes
    assert state["phase"] == "failed" and "frwacceptoif" in state["incompatible"][0], state
    # The rule really is the one that crashes iptables-nft.
    crash = node.run(KUBE_ROUTER_C[:3] + ["-S", "FORWARD"], check=False)
    assert crash.returncode != 0 and "incompatible" in crash.stderr, crash


def test_repair_lets_kube_router_read_the_rules(node: Container):
    write_config(node, CONFIG.format(policy="repair"))
    node.run(["systemctl", "start", "k3s.service"])  # fails if the stand-in crashed
    assert show(node, "k3s", "ActiveState")["ActiveState"] == "active", logs(node)
    assert any(e["FWGATE_EVENT"] == "repaired" for e in events(node)), logs(node)
    # Repaired in place, inside the sandbox: iptables reads the whole chain now.
    rules = node.run(KUBE_ROUTER_C[:3] + ["-S", "FORWARD"]).stdout
    assert re.search(r"-A FORWARD -o wt0 -m conntrack --ctstate RELATED,ESTABLISHED\b.* "
                     r"-j ACCEPT", rules), rules
    assert node.run(KUBE_ROUTER_C, check=False).returncode == 1  # "no such rule": kube-router adds it
    # compat.iptables: auto ran the iptables k3s runs (its bundled one: prefer-bundled-bin)
    # inside fwgate's sandbox, and it agreed.
    wanted = {"fwgate.service: iptables -t filter -S FORWARD",
              "fwgate.service: iptables-save -t filter"}

    def calls() -> set[str]:
        out = node.run(["journalctl", "-t", "k3s-iptables", "-o", "cat", "--no-pager"]).stdout
        return set(out.splitlines())
    try:
        wait_for("fwgate's calls to k3s's iptables in the journal", lambda: wanted <= calls(),
                 timeout=10)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {calls()}") from None
    assert "disagree" not in said(node), said(node)


# --- 4. stop and bad config ---------------------------------------------------------

def test_stop_mid_wait_is_prompt(node: Container):
    start_fwgate_alone(node)
    began = time.monotonic()
    node.run(["systemctl", "stop", "fwgate.service"], timeout=10)
    took = time.monotonic() - began
    props = show(node, "fwgate", "ActiveState", "Result", "ExecMainStatus")
    assert props == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}, props
    assert took < 1.0, f"systemctl stop took {took:.2f}s"
    assert "SIGTERM: stopping before READY" in said(node)


def test_bad_config_exits_78_and_is_not_restarted(node: Container):
    write_config(node, CONFIG.format(policy="warn") + "setle: 3s\n")
    r = node.run(["systemctl", "start", "fwgate.service"], check=False)
    assert r.returncode != 0
    # With a restart scheduled the unit would be "activating (auto-restart)" now.
    props = show(node, "fwgate", "ActiveState", "SubState", "Result", "ExecMainStatus",
                 "NRestarts", "Restart")
    assert props == {"ActiveState": "failed", "SubState": "failed", "Result": "exit-code",
                     "ExecMainStatus": "78", "NRestarts": "0", "Restart": "on-failure"}, props
    assert re.search(r"setle: unknown key .*\(line 5\)", said(node)), said(node)


# --- 5. Netbird restarts after boot ----------------------------------------------------

def test_netbird_restart_after_ready_leaves_the_gate_and_k3s_alone(node: Container):
    """The gate alone (no guard here): its job ended at READY."""
    without_guard(node)
    write_config(node, CONFIG.format(policy="repair"))
    node.run(["systemctl", "start", "k3s.service"])
    wait_changes(node, BURSTS)
    before = {u: show(node, u, "InvocationID", "ActiveEnterTimestampMonotonic", "NRestarts")
              for u in ("fwgate", "k3s")}
    assert node.run(KUBE_ROUTER_C[:3] + ["-S", "FORWARD"], check=False).returncode == 0

    node.run(["systemctl", "restart", "netbird.service"])
    wait_changes(node, 2 * BURSTS)
    after = {u: show(node, u, "InvocationID", "ActiveEnterTimestampMonotonic", "NRestarts")
             for u in ("fwgate", "k3s")}
    # fwgate ran once (it is done: active (exited)); Wants= does not propagate
    # restarts, and k3s keeps running untouched.
    assert after == before, logs(node)
    assert show(node, "fwgate", "SubState")["SubState"] == "exited"
    assert show(node, "k3s", "SubState")["SubState"] == "running"
    assert [e["FWGATE_EVENT"] for e in events(node)].count("ready") == 1
    # The truth: Netbird wrote its crash-prone rule again and, without the guard
    # (test_lifecycle.py), nobody repaired it: k3s dies at its next sync.
    crash = node.run(KUBE_ROUTER_C[:3] + ["-S", "FORWARD"], check=False)
    assert crash.returncode != 0 and "incompatible" in crash.stderr, crash


WATCH = "after_ready:\n  mode: watch\n"


def test_watch_mode_repairs_again_and_brings_crashed_k3s_back(node: Container):
    without_guard(node)  # the gate guards itself here
    write_config(node, CONFIG.format(policy="repair") + WATCH +
                 "  restart_after_repair: k3s.service\n")
    node.run(["systemctl", "start", "k3s.service"])
    fw = show(node, "fwgate", "SubState", "MainPID")
    assert fw["SubState"] == "running", fw  # still there after READY

    # fwgate repairs at once; to see k3s crash first, freeze fwgate meanwhile.
    node.run(["systemctl", "kill", "--signal=SIGSTOP", "--kill-whom=main", "fwgate.service"])
    node.run(["systemctl", "restart", "netbird.service"])
    wait_changes(node, BURSTS + 3)  # Netbird's crash-prone rule is back (burst_filter)
    # k3s restarting now meets it and crashes, as it would on a real node.
    node.run(["systemctl", "restart", "k3s.service"], check=False)
    crashed = show(node, "k3s", "ActiveState", "ExecMainStatus")
    assert crashed == {"ActiveState": "failed", "ExecMainStatus": "3"}, (crashed, logs(node))
    # Thawed, fwgate reads the events it missed, repairs, and restarts the crashed k3s.
    node.run(["systemctl", "kill", "--signal=SIGCONT", "--kill-whom=main", "fwgate.service"])
    wait_for("k3s to be brought back", lambda: show(node, "k3s", "ActiveState")["ActiveState"]
             == "active", timeout=30)
    assert "restarted k3s.service (it was failed) after the repair" in said(node), logs(node)
    assert node.run(KUBE_ROUTER_C[:3] + ["-S", "FORWARD"], check=False).returncode == 0
    assert show(node, "fwgate", "MainPID") == {"MainPID": fw["MainPID"]}  # the same fwgate
    state = status(node)
    assert state["running"] and state["phase"] == "guarding", state
    assert state["repairs_total"] == 2 and state["restarts"][0]["unit"] == "k3s.service", state

    node.run(["systemctl", "reload", "fwgate.service"])  # ExecReload= sends SIGHUP
    wait_for("the reload", lambda: "SIGHUP: reloaded /etc/fwgate.yaml" in said(node))


def test_watch_mode_crash_restarts_fwgate_and_regates_k3s(node: Container):
    without_guard(node)
    write_config(node, CONFIG.format(policy="repair") + WATCH)
    node.run(["systemctl", "start", "k3s.service"])
    k3s_before = show(node, "k3s", "InvocationID")["InvocationID"]
    node.run(["systemctl", "kill", "--signal=SIGKILL", "--kill-whom=main", "fwgate.service"])
    # Restart=on-failure brings fwgate back; Requires= carries the restart to k3s,
    # which starts again only after fwgate's new READY.
    wait_for("fwgate restarted and READY again", lambda: show(
        node, "fwgate", "NRestarts", "ActiveState") == {"NRestarts": "1", "ActiveState": "active"},
        timeout=30)
    wait_for("k3s restarted", lambda: (lambda p: p["ActiveState"] == "active" and
                                       p["InvocationID"] != k3s_before)(
        show(node, "k3s", "ActiveState", "InvocationID")), timeout=30)
    assert mono(node, "fwgate", "ActiveEnterTimestampMonotonic") < \
        mono(node, "k3s", "ExecMainStartTimestampMonotonic"), logs(node)


# --- 6. the journal ---------------------------------------------------------------------

PROM_DIR = "/var/lib/prometheus/node-exporter"


def test_journal_fields_and_metrics_textfile(node: Container):
    # The drop-in docs/systemd.md gives for metrics.textfile under ProtectSystem=strict.
    node.run(["mkdir", "-p", PROM_DIR])
    node.write_file("/etc/systemd/system/fwgate.service.d/metrics.conf",
                    f"[Service]\nReadWritePaths=-{PROM_DIR}\n")
    write_config(node, CONFIG.format(policy="warn") +
                 f"metrics:\n  textfile: {PROM_DIR}/fwgate.prom\n")
    node.run(["systemctl", "daemon-reload"])
    node.run(["systemctl", "start", "fwgate.service"], timeout=30)
    got = wait_for("fwgate's ready event in the journal",
                   lambda: (lambda ev: ev if ev and ev[-1]["FWGATE_EVENT"] == "ready" else None)(
                       events(node)))
    kinds = [e["FWGATE_EVENT"] for e in got]
    assert {"stage-start", "stage-held", "settled", "ready"} <= set(kinds), kinds
    assert kinds[0] == "stage-start" and kinds[-1] == "ready", kinds
    ids: dict[str, str] = {}
    for e in got:
        assert e["_SYSTEMD_UNIT"] == "fwgate.service" and e["SYSLOG_IDENTIFIER"] == "fwgate"
        assert re.fullmatch(r"[0-9a-f]{32}", e["MESSAGE_ID"]), e
        assert ids.setdefault(e["FWGATE_EVENT"], e["MESSAGE_ID"]) == e["MESSAGE_ID"], e
        assert e["FWGATE_STAGE"] in ("netbird", "tunnel", "rules", "compat", "ready"), e
        assert int(e["FWGATE_ELAPSED_MS"]) >= 0 and int(e["FWGATE_GENID"]) > 0, e
        assert re.fullmatch(r"[0-9a-f]{64}", e["FWGATE_DIGEST"]), e
    assert len(set(ids.values())) == len(ids)  # one MESSAGE_ID per kind
    elapsed = [int(e["FWGATE_ELAPSED_MS"]) for e in got]
    assert elapsed == sorted(elapsed) and elapsed[-1] >= SETTLE * 1000, elapsed
    settled = [e["FWGATE_STAGE"] for e in got if e["FWGATE_EVENT"] == "settled"]
    assert settled == ["netbird", "tunnel", "rules"], settled

    prom = node.read_file(f"{PROM_DIR}/fwgate.prom")
    assert re.search(r'^fwgate_ready\{role="gate"\} 1$', prom, re.M), prom
    assert "cannot write" not in said(node)
