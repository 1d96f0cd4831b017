"""Finding the iptables binary and reading its verdict; the binary itself is faked here
(tests/netns/test_compat_corpus.py runs the real one)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fwgate import programmer as P
from fwgate.compat.reader import analyse
from fwgate.adapters.iptables import cross_check, find_iptables, tool_argv
from fwgate.compat.crosscheck import compare
from fwgate.errors import EnvironmentProblem
from fwgate.model import Chain, Table

sys.path.insert(0, os.path.dirname(__file__))  # the sibling test module, in any import mode
from test_compat_analyser import rule, snap  # noqa: E402


def make_exe(path: str, mtime: float | None = None) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("#!/bin/sh\n")
    os.chmod(path, 0o755)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_setting_none_and_auto_without_k3s(tmp_path):
    assert find_iptables("none") is None
    assert find_iptables("auto", k3s_data=str(tmp_path / "missing")) is None


def test_auto_prefers_current_then_newest(tmp_path):
    data = tmp_path / "data"
    old = make_exe(str(data / "aaa" / "bin" / "aux" / "iptables"), mtime=1000)
    new = make_exe(str(data / "bbb" / "bin" / "aux" / "iptables"), mtime=2000)
    assert find_iptables("auto", k3s_data=str(data)) == new
    os.symlink(data / "aaa", data / "current")
    assert find_iptables("auto", k3s_data=str(data)) == str(data / "current" / "bin" / "aux" / "iptables")
    assert old  # the target of `current`


def test_explicit_path(tmp_path, monkeypatch):
    exe = make_exe(str(tmp_path / "iptables"))
    assert find_iptables(exe) == exe
    with pytest.raises(EnvironmentProblem, match="no such file"):
        find_iptables(str(tmp_path / "nope"))
    plain = tmp_path / "plain"
    plain.write_text("")
    with pytest.raises(EnvironmentProblem, match="not an executable"):
        find_iptables(str(plain))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_iptables("iptables") == exe
    with pytest.raises(EnvironmentProblem, match="not found on PATH"):
        find_iptables("ip6tables-nowhere")


def test_sibling_tools(tmp_path):
    aux = tmp_path / "aux"
    ipt = make_exe(str(aux / "iptables"))
    for name in ("ip6tables", "iptables-save", "ip6tables-save"):
        make_exe(str(aux / name))
    assert tool_argv(ipt, "ip") == [ipt]
    assert tool_argv(ipt, "ip6") == [str(aux / "ip6tables")]
    assert tool_argv(ipt, "ip6", save=True) == [str(aux / "ip6tables-save")]
    assert tool_argv(str(aux / "ip6tables"), "ip", save=True) == [str(aux / "iptables-save")]
    nft = make_exe(str(tmp_path / "iptables-nft"))
    assert tool_argv(nft, "ip", save=True) is None              # no iptables-nft-save beside it
    make_exe(str(tmp_path / "ip6tables-nft-save"))
    assert tool_argv(nft, "ip6", save=True) == [str(tmp_path / "ip6tables-nft-save")]
    assert tool_argv("/x/xtables-nft-multi", "ip6", save=True) == ["/x/xtables-nft-multi",
                                                                     "ip6tables-save"]


class FakeIptables:
    """Answers like iptables 1.8.9 would for a FORWARD chain holding Netbird's rule."""

    def __init__(self, version="iptables v1.8.9 (nf_tables)"):
        self.calls: list[list[str]] = []
        self.version = version

    def __call__(self, argv):
        self.calls.append(argv)
        tool = os.path.basename(argv[4] if argv[0] == "ip" else argv[0])
        if "--version" in argv:
            return subprocess.CompletedProcess(argv, 0, self.version + "\n", "")
        if tool.endswith("-save"):
            return subprocess.CompletedProcess(
                argv, 0, "# Table `filter' is incompatible, use 'nft' tool.\n", "")
        if argv[-1] == "FORWARD":
            return subprocess.CompletedProcess(argv, 1, "", "iptables v1.8.9 (nf_tables): chain "
                                               "`FORWARD' in table `filter' is incompatible, use 'nft' tool.\n")
        return subprocess.CompletedProcess(argv, 0, f"-P {argv[-1]} ACCEPT\n", "")


def filter_table(*rules) -> Table:
    return Table("ip", "filter", chains=(Chain("INPUT", 1, 1), Chain("FORWARD", 2, 2)), rules=rules)


def test_cross_check_runs_inside_the_namespace(tmp_path):
    ipt = make_exe(str(tmp_path / "iptables"))
    make_exe(str(tmp_path / "iptables-save"))
    fake = FakeIptables()
    verdict = cross_check(ipt, "ns1", [filter_table(), Table("arp", "filter")], run=fake)
    assert all(call[:4] == ["ip", "netns", "exec", "ns1"] for call in fake.calls)
    assert [fake_call[4:] for fake_call in fake.calls[1:]] == [
        [ipt, "-t", "filter", "-S", "INPUT"], [ipt, "-t", "filter", "-S", "FORWARD"],
        [str(tmp_path / "iptables-save"), "-t", "filter"]]
    assert [(c.chain, c.exit_code) for c in verdict.refused_chains] == [("FORWARD", 1)]
    assert "incompatible" in verdict.refused_chains[0].error
    assert [(s.table, s.outcome) for s in verdict.left_out_tables] == [("filter", "left out")]
    assert verdict.version == "iptables v1.8.9 (nf_tables)"
    assert verdict.skipped == ("arp filter: only ip and ip6 tables are cross-checked",)


def test_cross_check_in_own_namespace_and_missing_siblings(tmp_path):
    ipt = make_exe(str(tmp_path / "iptables"))
    fake = FakeIptables(version="iptables v1.8.9 (legacy)")
    verdict = cross_check(ipt, None, [filter_table(), Table("ip6", "filter"),
                                      Table("ip", "netbird")], run=fake)
    assert fake.calls[0] == [ipt, "--version"]
    assert verdict.saves == ()
    assert any("no ip6tables" in s for s in verdict.skipped)
    assert any("no -save tool" in s for s in verdict.skipped)
    assert any("not one of iptables' tables" in s for s in verdict.skipped)
    assert any("legacy mode" in s for s in verdict.skipped)


def test_compare_agreement_and_disagreement(tmp_path):
    ipt = make_exe(str(tmp_path / "iptables"))
    make_exe(str(tmp_path / "iptables-save"))
    netbird = rule(*P.forward_oif_rule("wt0"), userdata=P.TAG_FORWARD_OIF)
    verdict = cross_check(ipt, None, [filter_table(netbird)], run=FakeIptables())
    assert compare(analyse(snap(netbird)), verdict) == []
    fine = analyse(snap(rule(*P.iif_accept_rule("wt0"))))
    found = compare(fine, verdict)
    assert [(d.chain, d.analyser) for d in found] == [("FORWARD", "-S exits 0"),
                                                      (None, "iptables-save: saved")]
    assert found[0].iptables.startswith("-S exits 1: iptables v1.8.9")
