"""After READY: keep watch, repair live, report status and metrics (after_ready: watch)."""
import json
import os
import signal
import subprocess
import threading
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fwgate_testing.helpers import (
    KUBE_ROUTER_CHECK, add_wt0, fwgate_cmd, gate_yaml, kube_router_state, sh, start_fwgate,
    start_programmer, write_config,
)

SETTLE = 0.5
WATCH = """after_ready:
  mode: watch
metrics:
  textfile: {metrics}
"""


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


def metrics(path: str) -> dict[str, float]:
    with open(path) as fh:
        return {s.name: s.value for f in text_string_to_metric_families(fh.read()) for s in f.samples
                if s.labels == {"role": "gate"}}


def status(netns: str) -> dict:
    out = subprocess.run(fwgate_cmd() + ["--netns", netns, "status", "--json"], capture_output=True,
                         text=True, timeout=30)
    return json.loads(out.stdout)


def kube_router_node(netns: str) -> None:
    add_wt0(netns)
    kube_router_state(netns)


def netbird_restarts(netns: str) -> float:
    """Netbird stops (removes its rules), starts, writes them again; the last change."""
    start_programmer(netns, "--flush").communicate(timeout=30)
    out, _ = start_programmer(netns, "--pause", "0.2").communicate(timeout=30)
    return float(out.split()[-2])


def start_watching(netns, tmp_path, notify, policy):
    prom = str(tmp_path / "fwgate.prom")
    config = write_config(str(tmp_path), gate_yaml(settle="500ms", policy=policy,
                                                   extra=WATCH.format(metrics=prom)))
    gate = start_fwgate(["--config", config, "--netns", netns, "run"], notify)
    start_programmer(netns, "--pause", "0.2").communicate(timeout=30)
    wait_for(lambda: notify.first("READY", "1"), 20, "READY")
    return gate, prom


def stop(gate: subprocess.Popen) -> str:
    gate.send_signal(signal.SIGTERM)
    _, err = gate.communicate(timeout=10)
    return err


def test_netbird_restart_after_ready_is_repaired_live(netns, tmp_path, notify):
    kube_router_node(netns)
    gate, prom = start_watching(netns, tmp_path, notify, "repair")
    try:
        assert sh(netns, *KUBE_ROUTER_CHECK, check=False).returncode == 0
        assert status(netns)["gate"]["running"] is True
        netbird_restarts(netns)
        # Repaired as the event was read: kube-router's check works right after.
        assert sh(netns, *KUBE_ROUTER_CHECK, check=False).returncode == 0
        state = wait_for(lambda: (lambda s: s if s["repairs_total"] >= 2 else None)(status(netns)["gate"]),
                         5, "the state file to count both repairs")
        assert state["phase"] == "guarding" and state["incompatible"] == []
        assert "frwacceptoif" in state["repairs"][-1]["rule"]
        m = metrics(prom)
        assert m["fwgate_repairs_total"] >= 2 and m["fwgate_ready"] == 1
        assert m["fwgate_incompatible_rules"] == 0
    finally:
        err = stop(gate)
    assert gate.returncode == 0, err
    assert notify.first("STOPPING", "1")
    assert status(netns)["gate"]["running"] is False


def test_warn_names_the_rule_after_ready(netns, tmp_path, notify):
    kube_router_node(netns)
    gate, prom = start_watching(netns, tmp_path, notify, "warn")
    try:
        ready_at = notify.first("READY", "1")[0]
        netbird_restarts(netns)
        named = wait_for(lambda: [m["STATUS"] for t, m in notify.messages if t > ready_at and
                                  "STATUS" in m and m["STATUS"].startswith("watching: degraded")],
                         10, "a STATUS after the re-check")
        assert "frwacceptoif" in named[-1] and "degraded" in named[-1]
        assert metrics(prom)["fwgate_incompatible_rules"] == 1
    finally:
        err = stop(gate)
    assert "(frwacceptoif) was just added and iptables-nft cannot read it" in err


def test_state_and_metrics_are_never_seen_half_written(netns, tmp_path, notify, private_runtime_dir):
    kube_router_node(netns)
    prom = str(tmp_path / "fwgate.prom")
    state_file = os.path.join(private_runtime_dir, f"state-{netns}.json")
    seen, bad, done = [0], [], threading.Event()

    def reader():
        while not done.is_set():
            for path, parse in ((state_file, json.load),
                                (prom, lambda fh: list(text_string_to_metric_families(fh.read())))):
                try:
                    with open(path) as fh:
                        parse(fh)
                    seen[0] += 1
                except FileNotFoundError:
                    pass
                except Exception as exc:  # a torn file
                    bad.append(repr(exc))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        gate, prom = start_watching(netns, tmp_path, notify, "repair")
        for _ in range(3):
            netbird_restarts(netns)
        time.sleep(SETTLE + 0.5)
        stop(gate)
    finally:
        done.set()
        thread.join()
    assert not bad and seen[0] > 50


def test_status_without_a_daemon_says_so(tmp_path):
    out = subprocess.run(fwgate_cmd() + ["--netns", "fwgate-never-ran", "status"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert "fwgate has not run since boot" in out.stderr
