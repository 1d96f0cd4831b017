"""Tests of the nspawn/systemd harness itself (see README.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fwgate_testing.node.container import Container, is_running

pytestmark = pytest.mark.systemd  # slow-ish: deselect with -m "not systemd"

UNIT = "fwgate-harness-notify.service"
# NotifyAccess=all: the READY=1 datagram comes from systemd-notify, a child of
# the main process. The child is started in the background and the shell then
# execs sleep, which never reaps it: the sender stays a zombie in the unit's
# cgroup, so PID 1 can always attribute the message (systemd #2739 race).
NOTIFY_UNIT = """\
[Unit]
Description=fwgate harness Type=notify check

[Service]
Type=notify
NotifyAccess=all
ExecStart=/bin/sh -c 'echo fwgate-harness-hello; systemd-notify --ready --status=harness-ready & exec sleep infinity'
TimeoutStartSec=15
"""


def test_boots_to_running(container: Container):
    r = container.run(["systemctl", "is-system-running"])
    assert r.stdout.strip() == "running"
    assert container.read_file("/etc/hostname").strip() == "fwgate-test"
    # The container's PID 1 is Debian's systemd.
    assert container.run(["cat", "/proc/1/comm"]).stdout.strip() == "systemd"


def test_systemctl_inside(container: Container):
    r = container.run(["systemctl", "show", "-p", "ActiveState", "--value", "multi-user.target"])
    assert r.stdout.strip() == "active"
    r = container.run(["systemctl", "list-units", "--failed", "--plain", "--no-legend"])
    assert r.stdout.strip() == ""


def test_notify_unit_ready_and_journal(container: Container):
    container.write_file(f"/etc/systemd/system/{UNIT}", NOTIFY_UNIT)
    container.run(["systemctl", "daemon-reload"])
    # For Type=notify, "start" returns only once READY=1 arrived.
    container.run(["systemctl", "start", UNIT], timeout=20)
    show = container.run(["systemctl", "show", "-p", "ActiveState", "-p", "SubState",
                          "-p", "StatusText", UNIT]).stdout
    props = dict(line.split("=", 1) for line in show.splitlines() if "=" in line)
    assert props == {"ActiveState": "active", "SubState": "running",
                     "StatusText": "harness-ready"}

    # The unit's stdout reaches the journal asynchronously: poll briefly.
    deadline = time.monotonic() + 10
    while True:
        out = container.run(["journalctl", "-u", UNIT, "-o", "json", "--no-pager"]).stdout
        entries = [json.loads(line) for line in out.splitlines() if line.strip()]
        messages = [e.get("MESSAGE") for e in entries]
        if "fwgate-harness-hello" in messages or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert "fwgate-harness-hello" in messages, messages
    hello = entries[messages.index("fwgate-harness-hello")]
    assert hello["_SYSTEMD_UNIT"] == UNIT


def test_write_file_mode(container: Container):
    container.write_file("/usr/local/bin/fwgate-hello", "#!/bin/sh\necho hi\n", mode=0o755)
    assert container.run(["fwgate-hello"]).stdout == "hi\n"
    # --volatile=overlay: writes never reach the cached rootfs.
    assert not (container.rootfs / "usr/local/bin/fwgate-hello").exists()


def test_private_network_namespace(container: Container):
    inside = container.run(["readlink", "/proc/self/ns/net"]).stdout.strip()
    assert inside.startswith("net:[")
    assert inside != os.readlink("/proc/self/ns/net")
    links = container.run(["ip", "-o", "link", "show"]).stdout.splitlines()
    assert [line.split(":")[1].strip() for line in links] == ["lo"]


def test_project_checkout_bound_read_only(container: Container):
    here = str(Path(__file__).resolve())
    assert container.run(["test", "-f", here], check=False).returncode == 0
    r = container.run(["touch", here], check=False)
    assert r.returncode != 0 and "Read-only file system" in r.stderr


def test_run_errors_are_one_line(container: Container):
    with pytest.raises(RuntimeError, match=r"^in container: sh -c 'echo boom >&2; exit 3' exited 3: boom$"):
        container.run(["sh", "-c", "echo boom >&2; exit 3"])
    assert container.run(["false"], check=False).returncode == 1
    with pytest.raises(RuntimeError, match="timed out after 0.5s"):
        container.run(["sleep", "5"], timeout=0.5)
    # The killed command must not linger and stall the container's halt.
    container.close()
    assert container.returncode == 0


def test_close_leaves_nothing_behind(systemd_rootfs):
    c = Container(systemd_rootfs)
    with c:
        pids = c.cgroup_pids()
        cgroups = list(c.cgroups)
        leader = c.leader
        assert c.pid in pids and leader in pids and len(pids) >= 3
        assert all(cg.is_dir() for cg in cgroups)
        started = time.monotonic()
    stop_s = time.monotonic() - started
    assert c.returncode == 0  # clean halt via SIGTERM, no SIGKILL needed
    assert stop_s < c.stop_timeout
    assert not [p for p in pids if is_running(p)]
    assert not [cg for cg in cgroups if cg.exists()]
    assert c.leader is None and c.proc is None
    c.close()  # idempotent


def test_close_after_nspawn_was_killed(systemd_rootfs):
    # Even if nspawn dies hard, close() must take the container's PID 1 down.
    c = Container(systemd_rootfs)
    with c:
        pids = c.cgroup_pids()
        c.proc.kill()
        c.proc.wait()
    assert not [p for p in pids if is_running(p)]
    assert not [cg for cg in c.cgroups if cg.exists()]


def test_boot_failure_is_clear_and_cleaned_up(systemd_rootfs, tmp_path):
    c = Container(tmp_path)  # not a rootfs (systemd_rootfs: same skip rules)
    with pytest.raises(RuntimeError, match="not a bootable rootfs"):
        with c:
            pass
    assert c.cgroups == [] and c.proc is None


def test_keyboard_interrupt_tears_down(systemd_rootfs, tmp_path):
    # Ctrl-C while a command runs inside: the with-block must still tear down.
    script = tmp_path / "interrupted.py"
    script.write_text(f"""
from fwgate_testing.node.container import Container
with Container({str(systemd_rootfs)!r}) as c:
    print(c.pid, c.leader, *c.cgroups, flush=True)
    c.run(["sleep", "30"])
""")
    tests = str(Path(__file__).resolve().parents[1])  # where fwgate_testing lives
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": tests})
    try:
        nspawn, leader, *cgroups = proc.stdout.readline().split()
        time.sleep(0.3)  # let "sleep 30" start inside
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "KeyboardInterrupt" in err
    assert not is_running(int(nspawn)) and not is_running(int(leader))
    assert not [cg for cg in cgroups if Path(cg).exists()]


def test_degraded_boot_names_failed_units(systemd_rootfs, tmp_path):
    # A unit that fails during boot, injected via binds (the rootfs stays
    # untouched); a drop-in pulls it in (.wants/ entries must be symlinks).
    unit = tmp_path / "fwgate-fail.service"
    unit.write_text("[Service]\nType=oneshot\nExecStart=/bin/false\n")
    dropin = tmp_path / "wants.conf"
    dropin.write_text("[Unit]\nWants=fwgate-fail.service\n")
    c = Container(systemd_rootfs, binds_ro=[
        f"{unit}:/etc/systemd/system/fwgate-fail.service",
        f"{dropin}:/etc/systemd/system/multi-user.target.d/fwgate-fail.conf"])
    with pytest.raises(RuntimeError, match=r"booted degraded: failed units: fwgate-fail\.service$"):
        with c:
            pass
    assert c.proc is None and c.cgroups == []
