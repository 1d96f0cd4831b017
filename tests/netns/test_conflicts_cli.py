"""Mark conflicts where an operator meets them: `fwgate conflicts`, the marks section of
`fwgate check`, and the guard's journal line and metric, on netbird#6022's ruleset."""
from __future__ import annotations

import json
import os
import signal
import subprocess

from prometheus_client.parser import text_string_to_metric_families

from fwgate_testing.helpers import fwgate_cmd, sh, start_fwgate, write_config
from fwgate_testing.rulesets import KUBE_ROUTER, PORTMAP, netbird

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def fwgate(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")}
    return subprocess.run(fwgate_cmd() + list(args), capture_output=True, text=True, env=env,
                          timeout=60)


def issue_6022(netns: str) -> None:
    sh(netns, "iptables-restore", "-n", input=PORTMAP)
    sh(netns, "nft", "-f", "-", input=netbird())
    sh(netns, "iptables-restore", input=KUBE_ROUTER)


def test_conflicts_command_exit_codes_and_json(netns):
    quiet = fwgate("--netns", netns, "conflicts")
    assert (quiet.returncode, quiet.stdout.strip()) == (0, "no packet-mark conflict harms a packet"), quiet
    issue_6022(netns)
    found = fwgate("--netns", netns, "conflicts", "--json")
    assert found.returncode == 1, found.stderr
    doc = json.loads(found.stdout)
    pairs = {(c["writer"]["owner"], c["reader"]["owner"], c["bits"]) for c in doc["conflicts"]}
    assert {("kube-router", "netbird", "0x10000"), ("kube-router", "netbird", "0x20000")} <= pairs
    text = fwgate("--netns", netns, "conflicts").stdout
    assert "meta mark 0x20000: kube-router ip filter" in text and "accept missed" in text


def test_check_reports_marks_but_never_fails_on_them(netns, tmp_path):
    issue_6022(netns)
    config = write_config(str(tmp_path), "stages:\n  - name: t\n    rules:\n"
                                         "      - table: ip netbird\n")
    result = fwgate("--config", config, "--netns", netns, "check", "--json")
    report = json.loads(result.stdout)
    assert result.returncode == 0, result.stderr
    assert {c["reader"]["owner"] for c in report["marks"]} >= {"netbird"}
    text = fwgate("--config", config, "--netns", netns, "check").stdout
    assert "packet-mark conflict(s)" in text


def test_the_guard_names_a_new_conflict_once(netns, tmp_path, notify, private_runtime_dir):
    prom = tmp_path / "fwgate.prom"
    config = write_config(str(tmp_path), f"settle: 300ms\nwatch: [ip filter, ip netbird]\n"
                                         f"metrics:\n  textfile: {prom}\n")
    guard = start_fwgate(["--config", config, "--netns", netns, "guard"], notify)
    try:
        notify.wait_status("guarding")
        issue_6022(netns)       # kube-router's chains come after k3s started
        notify.wait_status("guarding", after=notify.messages[-1][0], timeout=15)
        samples = lambda: {s.labels.get("writer"): s.value for f in text_string_to_metric_families(
            (tmp_path / "fwgate-guard.prom").read_text()) for s in f.samples
            if s.name == "fwgate_mark_conflicts"}
        import time
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not samples().get("kube-router"):
            time.sleep(0.1)
        assert samples().get("kube-router", 0) >= 2
        state = json.load(open(os.path.join(private_runtime_dir, f"state-guard-{netns}.json")))
        assert any("accept missed" in c["text"] for c in state["mark_conflicts"])
    finally:
        guard.send_signal(signal.SIGTERM)
        _, err = guard.communicate(timeout=15)
    # each conflict once in the log, however many checks ran
    lines = [ln for ln in err.splitlines() if "meta mark 0x20000: kube-router" in ln]
    assert len(lines) == 1, err
