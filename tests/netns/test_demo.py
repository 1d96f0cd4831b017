"""`fwgate demo`: the main job, end to end, and its clean-up."""
import os
import signal
import subprocess
import time

import pytest

from fwgate_testing.helpers import fwgate_cmd


def demo_namespaces() -> set[str]:
    return {n for n in os.listdir("/run/netns") if n.startswith("fwgate-demo-")} \
        if os.path.isdir("/run/netns") else set()


@pytest.fixture
def root_only():
    if os.geteuid() != 0:
        pytest.skip("the demo creates a network namespace")


def test_demo_holds_until_quiet_then_ready(root_only):
    before = demo_namespaces()
    result = subprocess.run(fwgate_cmd() + ["demo", "--settle", "1200ms"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "agent  routing: rules written" in out
    assert "READY=1 at" in out
    assert "gate   repaired ip filter FORWARD" in out
    assert "iptables-nft (what k3s runs) on ip filter FORWARD: reads it" in out
    # READY comes after the agent's last burst: the line order shows it.
    assert out.index("agent  routing: rules written") < out.index("READY=1 at")
    assert demo_namespaces() == before


def test_ctrl_c_cleans_up(root_only):
    before = demo_namespaces()
    proc = subprocess.Popen(fwgate_cmd() + ["demo"], stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    for line in proc.stdout:
        if "agent  wt0 is up" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=10)
    assert proc.returncode == 130
    assert demo_namespaces() == before
