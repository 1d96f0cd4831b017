"""The faults edge nodes see, on the real kernel: nothing lost, no early READY."""
import json
import os
import signal
import subprocess
import time

import pytest

from fwgate_testing.helpers import (
    add_wt0, change_times, fwgate_cmd, gate_yaml, sh, start_fwgate, start_programmer, write_config,
)



def gate(netns, tmp_path, notify, settle="1s", extra=""):
    config = write_config(str(tmp_path), gate_yaml(settle=settle, timeout="60s", extra=extra))
    return start_fwgate(["--config", config, "--netns", netns, "run"], notify)


def finish(proc, timeout=60):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def test_netbird_restart_mid_settle_sends_the_gate_back(netns, tmp_path, notify):
    add_wt0(netns)
    config = write_config(str(tmp_path), gate_yaml(settle="2s", timeout="60s").replace(
        "link: wt0", "link: wt0\n    settle: 200ms"))  # reach the rules stage quickly
    fw = start_fwgate(["--config", config, "--netns", netns, "run"], notify)
    notify.wait_status("stage 1/2 tunnel")  # up and subscribed before Netbird writes
    start_programmer(netns, "--pause", "0").communicate(timeout=30)
    notify.wait_status("stage 2/2 rules: rules: 4 changes")
    time.sleep(0.5)
    start_programmer(netns, "--flush").communicate(timeout=30)  # Netbird stops ...
    flushed_at = time.monotonic()
    time.sleep(0.5)
    out, _ = start_programmer(netns, "--pause", "0.2").communicate(timeout=30)  # ... and starts
    rebuilt = change_times(out)[-1]
    code, err = finish(fw)
    assert code == 0, err
    ready_at = notify.first("READY", "1")[0]
    assert ready_at >= rebuilt + 2.0
    back = [m["STATUS"] for t, m in notify.messages if flushed_at <= t < rebuilt and "STATUS" in m]
    assert any("waiting for table ip netbird" in s or "waiting for chain" in s or
               "waiting for a rule matching iifname wt0" in s for s in back), notify.statuses()


@pytest.mark.parametrize("how", ["rename", "delete"])
def test_link_renamed_or_recreated(netns, tmp_path, notify, how):
    add_wt0(netns)
    start_programmer(netns, "--pause", "0").communicate(timeout=30)
    fw = gate(netns, tmp_path, notify, settle="2s")
    notify.wait_status("quiet")
    if how == "rename":
        sh(netns, "ip", "link", "set", "wt0", "down")
        sh(netns, "ip", "link", "set", "wt0", "name", "wt9")
        notify.wait_status("waiting for wt0 to appear")
        sh(netns, "ip", "link", "set", "wt9", "name", "wt0")
        back_at = time.monotonic()  # wt0 comes up during the next command, not before
        sh(netns, "ip", "link", "set", "wt0", "up")
    else:
        sh(netns, "ip", "link", "del", "wt0")
        notify.wait_status("waiting for wt0 to appear")
        back_at = time.monotonic()
        add_wt0(netns)
    code, err = finish(fw)
    assert code == 0, err
    assert notify.first("READY", "1")[0] >= back_at + 2.0


def test_watched_table_deleted_then_late(netns, tmp_path, notify):
    add_wt0(netns)
    start_programmer(netns, "--pause", "0").communicate(timeout=30)
    fw = gate(netns, tmp_path, notify, settle="1500ms")
    notify.wait_status("quiet")
    sh(netns, "nft", "delete", "table", "ip", "netbird")
    notify.wait_status("waiting for table ip netbird")
    time.sleep(2.0)  # longer than the window: still no READY without the table
    assert notify.first("READY") is None
    out, _ = start_programmer(netns, "--pause", "0").communicate(timeout=30)
    back = change_times(out)[-1]
    code, err = finish(fw)
    assert code == 0, err
    assert notify.first("READY", "1")[0] >= back + 1.5


def test_event_flood_overflows_and_resyncs(netns, tmp_path, notify, private_runtime_dir):
    add_wt0(netns)
    start_programmer(netns, "--pause", "0").communicate(timeout=30)
    fw = gate(netns, tmp_path, notify, settle="3s")
    notify.wait_status("quiet")
    # Freeze fwgate while the flood fills its socket: the overflow is certain.
    fw.send_signal(signal.SIGSTOP)
    out, _ = start_programmer(netns, "--skip-bursts", "--flood", "60000").communicate(timeout=120)
    flooded = change_times(out)[-1]
    fw.send_signal(signal.SIGCONT)
    time.sleep(1.0)  # the backlog read and the resync done, the window still open
    cpu_quiet_start = _cpu_seconds(fw.pid)
    time.sleep(1.5)
    cpu_quiet = _cpu_seconds(fw.pid) - cpu_quiet_start
    code, err = finish(fw)
    assert code == 0, err
    assert "overflowed the socket; resyncing" in err
    assert notify.first("READY", "1")[0] >= flooded + 3.0
    assert cpu_quiet < 0.2, f"{cpu_quiet:.2f}s of CPU in 1.5s of quiet: a busy loop"
    state = json.load(open(os.path.join(private_runtime_dir, f"state-{netns}.json")))
    assert state["resyncs_total"] >= 1


def _cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
@pytest.mark.parametrize("stage", ["waiting", "settling"])
def test_signals_at_every_stage(netns, tmp_path, notify, sig, code, stage):
    if stage == "settling":
        add_wt0(netns)
        start_programmer(netns, "--pause", "0").communicate(timeout=30)
    fw = gate(netns, tmp_path, notify, settle="30s")
    notify.wait_status("waiting for wt0" if stage == "waiting" else "stage 1/2 tunnel: rules:")
    sent = time.monotonic()
    fw.send_signal(sig)
    got, err = finish(fw, timeout=5)
    assert time.monotonic() - sent < 1.0
    assert got == code and "Traceback" not in err
    assert notify.first("STOPPING", "1") and notify.first("READY") is None


def test_sighup_reloads_or_keeps_the_running_config(netns, tmp_path, notify):
    add_wt0(netns)
    start_programmer(netns, "--pause", "0").communicate(timeout=30)
    config = write_config(str(tmp_path), gate_yaml(settle="30s", timeout="60s"))
    fw = start_fwgate(["--config", config, "--netns", netns, "run"], notify)
    notify.wait_status("of 30s")
    with open(config, "w") as fh:
        fh.write("settle: [broken\n")
    fw.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert fw.poll() is None  # a bad file on SIGHUP keeps the running config
    with open(config, "w") as fh:
        fh.write(gate_yaml(settle="500ms", timeout="60s"))
    reloaded = time.monotonic()
    fw.send_signal(signal.SIGHUP)
    code, err = finish(fw, timeout=15)
    assert code == 0, err
    assert "SIGHUP: keeping the running config" in err and "not valid YAML" in err
    assert "SIGHUP: reloaded" in err
    assert reloaded + 0.5 <= notify.first("READY", "1")[0] < reloaded + 5


def test_read_only_unless_repair_is_asked_for(netns, tmp_path, notify):
    add_wt0(netns)
    start_programmer(netns, "--pause", "0").communicate(timeout=30)  # the crash-prone rule is there
    before = sh(netns, "nft", "list", "ruleset").stdout
    genid = _genid(netns)
    config = write_config(str(tmp_path), gate_yaml(settle="300ms", timeout="60s"))
    code, err = finish(start_fwgate(["--config", config, "--netns", netns, "run"], notify))
    assert code == 0, err
    for args in (["check"], ["compat"], ["repair", "--dry-run"], ["validate-config"]):
        subprocess.run(fwgate_cmd() + ["--config", config, "--netns", netns, *args],
                       capture_output=True, timeout=60)
    assert _genid(netns) == genid
    assert sh(netns, "nft", "list", "ruleset").stdout == before


def _genid(netns):
    from fwgate.adapters.nfsock import NfSocket

    from fwgate_testing.helpers import in_netns

    def read():
        with NfSocket() as sock:
            return sock.genid()
    return in_netns(netns, read)
