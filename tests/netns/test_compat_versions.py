"""`fwgate compat` and `check` judge for the binary they are told k3s runs, each version
with its own reader; only what kube-router dies on blocks. Real binaries of 1.8.9,
1.8.11 and 1.8.13 (tests/fwgate_testing/iptables_versions.py), real kernel, the CLI as a process."""
from __future__ import annotations

import json
import subprocess

import pytest

from fwgate_testing.helpers import fwgate_cmd, kube_router_state, sh
from fwgate_testing.iptables_versions import builds

VERSIONS = builds()
KR = ("-t", "filter", "-C", "FORWARD", "-m", "comment", "--comment",
      "kube-router netpol - TEMCG2JMHZYE7H7T", "-j", "KUBE-ROUTER-FORWARD")


def compat(netns: str, *args: str) -> tuple[int, dict]:
    done = subprocess.run(fwgate_cmd() + ["--netns", netns, "compat", "--json", *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 3), done.stderr
    return done.returncode, json.loads(done.stdout)


def need(version: str) -> str:
    if version not in VERSIONS:
        pytest.skip(f"no iptables {version} here (scripts/iptables-versions)")
    return VERSIONS[version]


def test_mark_set_kills_1_8_9_only(netns):
    """`meta mark set 1` above kube-router's jump: 1.8.9 cannot parse it, 1.8.10+ read -j MARK."""
    kube_router_state(netns)
    sh(netns, "nft", "insert rule ip filter FORWARD meta mark set 1")
    for version, blocks in (("1.8.9", True), ("1.8.11", False), ("1.8.13", False)):
        bindir = need(version)
        code, out = compat(netns, "--iptables", f"{bindir}/iptables")
        real = sh(netns, f"{bindir}/iptables", *KR, check=False).returncode
        assert (code, real) == ((3, 3) if blocks else (0, 0)), (version, out)
        assert out["binaries"][0]["version"] == version
        assert out["iptables"]["disagreements"] == []
        if blocks:
            (bad,) = out["incompatible"]
            assert bad["versions"] == ["1.8.9"] and bad["iptables_error"] == "meta sreg key not supported"
            assert bad["binary"].startswith(f"{bindir}/iptables (iptables 1.8.9")
            assert bad["component"] == "kube-router" and "-C FORWARD" in bad["command"]
        else:
            assert out["incompatible"] == [] and out["not_blocking"] == []


def test_what_kube_proxy_and_flannel_retry_warns_but_never_blocks(netns):
    kube_router_state(netns)
    sh(netns, "iptables", "-t", "nat", "-P", "POSTROUTING", "ACCEPT")
    sh(netns, "nft", "insert rule ip nat POSTROUTING ct state new accept")
    code, out = compat(netns, "--iptables", f"{need('1.8.9')}/iptables")
    assert code == 0 and out["ok"] is True and out["incompatible"] == []
    (warn,) = out["not_blocking"]
    assert {i["component"] for i in warn["impacts"]} == {"kube-proxy", "flannel"}
    assert not any(i["fatal"] for i in warn["impacts"])
    assert out["verdict"]["warnings"] and "logged and retried" in out["verdict"]["warnings"][0]
    assert out["iptables"]["disagreements"] == []
    text = subprocess.run(fwgate_cmd() + ["--netns", netns, "compat", "--iptables",
                                          f"{need('1.8.9')}/iptables"],
                          capture_output=True, text=True, timeout=120).stdout
    assert "warns: ip nat POSTROUTING" in text and "kube-proxy" in text


def test_a_misread_is_spelled_out_and_kube_routers_sync_does_what_it_says(netns):
    """A set lookup iptables drops: after kube-router's save/restore the rule accepts all."""
    kube_router_state(netns)
    sh(netns, "nft", "insert rule ip filter FORWARD ip saddr { 10.0.0.1, 10.0.0.2 } accept")
    code, out = compat(netns, "--iptables", f"{need('1.8.9')}/iptables")
    assert code == 0 and out["incompatible"] == []
    (wrong,) = out["misread"]
    assert wrong["kind"] == "lookup" and "accept-all" in wrong["after_sync"]
    assert wrong["component"] == "kube-router"
    # kube-router's sync, as it runs it: iptables-save -t filter | iptables-restore -T filter
    saved = sh(netns, "iptables-save", "-t", "filter").stdout
    sh(netns, "iptables-restore", "-T", "filter", input=saved)
    rules = sh(netns, "nft", "--debug=netlink", "list", "chain", "ip", "filter", "FORWARD").stdout
    assert "lookup" not in rules
    assert sh(netns, "iptables", "-S", "FORWARD").stdout.splitlines()[1] == "-A FORWARD -j ACCEPT"


def test_check_names_the_binary_and_version_it_judged_for(netns, tmp_path):
    config = tmp_path / "fwgate.yaml"
    config.write_text(f"stages: [{{name: t, rules: [{{table: ip filter}}]}}]\n"
                      f"compat: {{iptables: {need('1.8.13')}/iptables}}\n")
    kube_router_state(netns)
    done = subprocess.run(fwgate_cmd() + ["--config", str(config), "--netns", netns, "check",
                                          "--json"], capture_output=True, text=True, timeout=120)
    out = json.loads(done.stdout)
    assert done.returncode == 0, done.stderr
    (b,) = out["compat"]["binaries"]
    assert (b["version"], b["source"], b["role"]) == ("1.8.13", "compat.iptables", "asked")
    assert out["compat"]["versions"] == ["1.8.13"]
