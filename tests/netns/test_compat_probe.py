"""The one-call probe with the real iptables binary as second opinion, before and after repair."""
from __future__ import annotations

from fwgate import programmer as P
from fwgate.adapters.nfsock import NfSocket
from fwgate.adapters.iptables import find_iptables
from fwgate.compat.policy import judge
from fwgate.compat.probe import probe
from fwgate.report import compat_json
from helpers import in_netns, sh


def probe_json(sock, binary=None, netns=None):
    result = probe(sock, binaries=(binary,) if binary else (), netns=netns).result
    return compat_json(result, judge(result, "fail"), "fail")


def test_probe_agrees_with_iptables_before_and_after_repair(netns):
    sh(netns, "iptables", "-N", "KUBE-ROUTER-FORWARD")
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
    assert [e["userdata"] for e in before["incompatible"]] == ["frwacceptoif"]
    assert before["managed_tables"] == [{"family": "ip", "table": "filter"}]  # not ip netbird
    assert [c["chain"] for c in before["iptables"]["refused_chains"]] == ["FORWARD"]
    assert before["iptables"]["tables"][0]["save"] == "left out"
    assert before["iptables"]["disagreements"] == []

    assert after["ok"] is True and after["incompatible"] == []
    assert after["iptables"]["refused_chains"] == []
    assert after["iptables"]["tables"][0]["save"] == "saved"
    assert after["iptables"]["disagreements"] == []


def test_probe_without_a_binary_stays_in_process(netns):
    def work():
        with NfSocket() as sock:
            return probe_json(sock)
    out = in_netns(netns, work)
    assert {k: out[k] for k in ("ok", "managed_tables", "incompatible", "unlistable_chains",
                                "misread")} == {"ok": True, "managed_tables": [], "incompatible": [],
                                                "unlistable_chains": [], "misread": []}
    assert "iptables" not in out and out["verdict"]["exit_code"] == 0
