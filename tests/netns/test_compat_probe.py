"""The one-call probe with the real iptables binary as second opinion, before and after repair."""
from __future__ import annotations

from fwgate import programmer as P
from fwgate.adapters.nfnl import NfSocket
from fwgate.compat.iptables import find_iptables
from fwgate.compat.probe import probe_json
from fwgate.compat.repair import apply_repairs
from helpers import in_netns, sh


def test_probe_agrees_with_iptables_before_and_after_repair(netns):
    sh(netns, "iptables", "-N", "KUBE-ROUTER-FORWARD")
    binary = find_iptables("iptables")

    def work():
        with NfSocket() as sock:
            prog = P.NetbirdProgrammer(sock)
            prog.burst_tables()
            prog.burst_filter()
            before = probe_json(sock, binary, netns)
            apply_repairs(sock)
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
    assert out == {"ok": True, "managed_tables": [], "incompatible": [],
                   "unlistable_chains": [], "misread": []}
