"""`fwgate run` on the real kernel, in namespaces the tests create.

sd_notify datagrams are caught on a real AF_UNIX socket; the Netbird-like
programmer runs as its own process and prints the monotonic time of each
change, so READY can be compared with the last change."""
import signal
import subprocess
import time

import pytest

from fwgate_testing.helpers import (
    add_wt0, change_times, gate_yaml, sh, start_fwgate, start_programmer, write_config,
)

SETTLE = 1.0
GATE = gate_yaml(settle=f"{SETTLE}s")


def finish(proc: subprocess.Popen, timeout: float = 40) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"fwgate did not finish: {err}")
    return proc.returncode, out, err


def test_ready_after_last_burst_plus_window(netns, tmp_path, notify):
    add_wt0(netns)
    config = write_config(str(tmp_path), GATE)
    gate = start_fwgate(["--config", config, "--netns", netns, "run"], notify)
    time.sleep(0.3)
    agent = start_programmer(netns, "--pause", "0.4")
    agent_out, _ = agent.communicate(timeout=20)
    code, _, err = finish(gate)
    assert code == 0, err
    ready = notify.first("READY", "1")
    assert ready, notify.messages
    last_change = change_times(agent_out)[-1]
    assert len(change_times(agent_out)) == 4
    assert ready[0] >= last_change + SETTLE
    assert ready[0] < last_change + SETTLE + 1.0
    statuses = notify.statuses()
    assert any(s.startswith("stage 2/2 rules: rules: ") for s in statuses) or \
        any("rules:" in s and "quiet" in s for s in statuses), statuses
    # The settled ruleset holds Netbird's crash-prone rule; with warn READY says so.
    assert "degraded" in ready[1]["STATUS"] and "frwacceptoif" in ready[1]["STATUS"]


def test_change_in_unwatched_table_does_not_delay(netns, tmp_path, notify):
    add_wt0(netns)
    config = write_config(str(tmp_path), GATE)
    setup = start_programmer(netns, "--pause", "0")
    setup_out, _ = setup.communicate(timeout=20)
    churn = start_programmer(netns, "--skip-bursts", "--churn", "0.2", "--churn-table", "k3s")
    try:
        started = time.monotonic()
        gate = start_fwgate(["--config", config, "--netns", netns, "run"], notify)
        code, _, err = finish(gate)
    finally:
        churn.send_signal(signal.SIGTERM)
        churn_out, _ = churn.communicate(timeout=10)
    assert code == 0, err
    ready_at = notify.first("READY", "1")[0]
    churned = [t for t in change_times(churn_out) if started < t < ready_at]
    assert len(churned) >= 3, "the other table must have changed while the gate waited"
    assert ready_at < started + 2 * SETTLE + 1.0


@pytest.mark.parametrize("policy", ["fail", "proceed"])
def test_rules_that_never_settle_time_out(netns, tmp_path, notify, policy):
    add_wt0(netns)
    config = write_config(str(tmp_path), GATE.replace("timeout: 30s", "timeout: 4s") +
                          f"on_timeout: {policy}\n")
    churn = start_programmer(netns, "--pause", "0", "--churn", str(SETTLE / 2))
    try:
        started = time.monotonic()
        gate = start_fwgate(["--config", config, "--netns", netns, "run"], notify)
        code, _, err = finish(gate)
        ended = time.monotonic()
    finally:
        churn.send_signal(signal.SIGTERM)
        churn.communicate(timeout=10)
    assert ended - started >= 4.0
    last_status = notify.statuses()[-1]
    if policy == "fail":
        assert code == 1, err
        assert notify.first("READY") is None
        assert "timed out" in last_status and "rules:" in last_status
        assert notify.first("ERRNO")
    else:
        assert code == 0, err
        ready = notify.first("READY", "1")
        assert ready and "degraded" in ready[1]["STATUS"] and "timed out" in ready[1]["STATUS"]


def test_link_going_down_sends_the_gate_back(netns, tmp_path, notify):
    add_wt0(netns)
    setup = start_programmer(netns, "--pause", "0")
    setup.communicate(timeout=20)
    config = write_config(str(tmp_path), GATE.replace(f"settle: {SETTLE}s", "settle: 3s"))
    gate = start_fwgate(["--config", config, "--netns", netns, "run"], notify)
    notify.wait_status("stage 1/2 tunnel: rules:")  # the tunnel is settling: the window is 3s
    down_at = time.monotonic()
    sh(netns, "ip", "link", "set", "wt0", "down")
    back = notify.wait_status("waiting for wt0 to come up", after=down_at)
    up_at = time.monotonic()  # wt0 comes up during the command, not before
    sh(netns, "ip", "link", "set", "wt0", "up")
    code, _, err = finish(gate)
    assert code == 0, err
    assert back < up_at
    assert notify.first("READY", "1")[0] >= up_at + 3.0


def test_sigterm_mid_wait_exits_promptly_with_stopping(netns, tmp_path, notify):
    config = write_config(str(tmp_path), GATE)
    gate = start_fwgate(["--config", config, "--netns", netns, "run"], notify)
    deadline = time.monotonic() + 10
    while not notify.statuses() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert notify.statuses()[-1] == "stage 1/2 tunnel: waiting for wt0 to appear"
    sent = time.monotonic()
    gate.send_signal(signal.SIGTERM)
    code, _, err = finish(gate, timeout=5)
    took = time.monotonic() - sent
    assert code == 0, err
    assert notify.first("STOPPING", "1")
    assert notify.first("READY") is None
    assert took < 1.0
    assert "Traceback" not in err


def test_keepalive_extends_the_start_timeout(netns, tmp_path, notify):
    config = write_config(str(tmp_path), GATE.replace("timeout: 30s", "timeout: 2500ms"))
    gate = start_fwgate(["--config", config, "--netns", netns, "run"], notify)
    code, _, err = finish(gate)
    assert code == 0  # on_timeout: proceed by default
    extends = [m for _, m in notify.messages if "EXTEND_TIMEOUT_USEC" in m]
    assert extends and int(extends[0]["EXTEND_TIMEOUT_USEC"]) > 2_000_000
