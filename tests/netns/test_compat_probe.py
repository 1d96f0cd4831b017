"""The one-call probe with real iptables binaries as second opinion, before and after repair."""
from __future__ import annotations

from fwgate import programmer as P
from fwgate.adapters.iptables import find_iptables
from fwgate.adapters.nfsock import NfSocket
from fwgate.compat.policy import judge
from fwgate.adapters.probe import probe
from fwgate.report import compat_json
from fwgate_testing.helpers import in_netns, kube_router_state, sh

KR_CHECK = ('iptables -t filter -C FORWARD -m comment --comment '
            '"kube-router netpol - TEMCG2JMHZYE7H7T" -j KUBE-ROUTER-FORWARD')


def probe_json(sock, binary=None, netns=None):
    result = probe(sock, binaries=(binary,) if binary else (), netns=netns).result
    return compat_json(result, judge(result, "fail"), "fail")


def test_probe_agrees_with_iptables_before_and_after_repair(netns):
    kube_router_state(netns)
    binary = find_iptables("iptables")

    def work():
        with NfSocket() as sock:
            prog = P.NetbirdProgrammer(sock, create_filter=True)
            prog.burst_tables()
            prog.burst_filter()
            before = probe_json(sock, binary, netns)
            probe(sock, repair=True)
            return before, probe_json(sock, binary, netns)
    before, after = in_netns(netns, work)

    assert before["ok"] is False
    (bad,) = before["incompatible"]
    assert bad["userdata"] == "frwacceptoif" and bad["blocking"] and bad["component"] == "kube-router"
    assert bad["binary"].startswith(binary) and "1.8.9" in bad["binary"]
    assert before["managed_tables"] == [{"family": "ip", "table": "filter"}]  # not ip netbird
    assert before["binaries"][0]["path"] == binary and before["binaries"][0]["version"] == "1.8.9"
    cross = before["iptables"]
    runs = {r["command"]: r for r in cross["runs"]}
    # kube-router's calls, as it runs them: Netbird's rule sits above its jump
    assert runs[KR_CHECK]["exit_code"] == 3 and runs[KR_CHECK]["fatal"]
    assert runs["iptables -t filter -S FORWARD"]["exit_code"] == 1
    assert runs["iptables -t filter -S KUBE-ROUTER-FORWARD 1"]["exit_code"] == 0
    assert [t["save"] for t in cross["tables"]] == ["left out"]
    assert cross["disagreements"] == []

    assert after["ok"] is True and after["incompatible"] == [] and after["not_blocking"] == []
    assert {r["command"]: r["exit_code"] for r in after["iptables"]["runs"]}[KR_CHECK] == 0
    assert after["iptables"]["tables"][0]["save"] == "saved"
    assert after["iptables"]["disagreements"] == []


def test_probe_without_a_binary_stays_in_process_and_judges_every_version(netns):
    def work():
        with NfSocket() as sock:
            return probe_json(sock)
    out = in_netns(netns, work)
    assert {k: out[k] for k in ("ok", "managed_tables", "incompatible", "not_blocking",
                                "unlistable_chains", "misread")} == {
        "ok": True, "managed_tables": [], "incompatible": [], "not_blocking": [],
        "unlistable_chains": [], "misread": []}
    assert out["versions"] == ["1.8.9", "1.8.10", "1.8.11", "1.8.12", "1.8.13"]
    assert "iptables" not in out and out["verdict"]["exit_code"] == 0 and out["binaries"] == []


def test_a_disagreement_is_loud(netns):
    """A real binary the reader got wrong: a tampered 1.8.9 that fails every listing."""
    import os
    import tempfile
    kube_router_state(netns)
    with tempfile.TemporaryDirectory() as d:
        real = find_iptables("iptables")
        for name in ("iptables", "iptables-save"):
            path = os.path.join(d, name)
            with open(path, "w") as f:
                f.write(f"#!/bin/sh\nfor a; do [ \"$a\" = -S ] && exit 1; done\n"
                        f"exec {os.path.join(os.path.dirname(real), name)} \"$@\"\n")
            os.chmod(path, 0o755)

        def work():
            with NfSocket() as sock:
                return probe_json(sock, os.path.join(d, "iptables"), netns)
        out = in_netns(netns, work)
    assert out["iptables"]["disagreements"]
    assert out["verdict"]["exit_code"] == 3  # it failed a call kube-router dies on: believed
    assert any("-S FORWARD" in line for line in out["verdict"]["blocking"])
    assert sh(netns, "iptables", "-S", "FORWARD").returncode == 0
