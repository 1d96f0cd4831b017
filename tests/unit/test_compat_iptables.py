"""Finding the iptables binaries and reading their answers; the binaries themselves are
faked here (tests/netns/test_compat_corpus.py and test_compat_versions.py run real ones)."""
from __future__ import annotations

import os
import subprocess

import pytest

from fwgate import programmer as P
from fwgate.adapters.iptables import binaries_for, cross_check, find_iptables, tool_argv, version_of
from fwgate.compat.binaries import Binary, asked
from fwgate.compat.crosscheck import Call, CrossCheck, calls_for, compare, predict
from fwgate.compat.impact import jump_spec
from fwgate.compat.profiles import OLDEST
from fwgate.compat.reader import analyse
from fwgate.errors import EnvironmentProblem
from fwgate.model import Chain, Snapshot, Table, TableRef

from fwgate_testing.compat_rules import rule

KR_CHECK = ("iptables -t filter -C FORWARD -m comment --comment "
            '"kube-router netpol - TEMCG2JMHZYE7H7T" -j KUBE-ROUTER-FORWARD')


def make_exe(path: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("#!/bin/sh\n")
    os.chmod(path, 0o755)
    return path


def test_explicit_binaries(tmp_path, monkeypatch):
    assert find_iptables("none") is None
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


class FakeIptables:
    """Answers like iptables 1.8.9 would for a FORWARD chain holding Netbird's rule."""

    def __init__(self, version="iptables v1.8.9 (nf_tables)"):
        self.calls: list[list[str]] = []
        self.version = version

    def __call__(self, argv):
        self.calls.append(argv)
        args = argv[4:] if argv[0] == "ip" else argv
        tool = os.path.basename(args[0])
        if "--version" in argv:
            return subprocess.CompletedProcess(argv, 0, self.version + "\n", "")
        if tool.endswith("-save"):
            return subprocess.CompletedProcess(
                argv, 0, "# Table `filter' is incompatible, use 'nft' tool.\n", "")
        if "-C" in args:
            return subprocess.CompletedProcess(argv, 3, "", "Error: cmp sreg undef\n")
        if "FORWARD" in args:
            return subprocess.CompletedProcess(argv, 1, "", "iptables v1.8.9 (nf_tables): chain "
                                               "`FORWARD' in table `filter' is incompatible, use 'nft' tool.\n")
        missing = args[-1] == "1" and args[-2] != "KUBE-ROUTER-FORWARD"   # -S CHAIN 1
        return subprocess.CompletedProcess(argv, 1 if missing else 0, "", "")


def filter_table(*rules) -> Table:
    return Table("ip", "filter", chains=(Chain("INPUT", 1, 1, 0, 1, "filter"),
                                         Chain("FORWARD", 2, 2, 0, 1, "filter"),
                                         Chain("KUBE-ROUTER-FORWARD", 3)), rules=rules)


def snap_of(*tables: Table) -> Snapshot:
    return Snapshot(1, {t.ref: t for t in tables}, tuple(t.ref for t in tables))


def test_version_and_the_detecting_wrapper_is_never_run(tmp_path):
    fake = FakeIptables("iptables v1.8.11 (nf_tables)")
    b = version_of(asked("/x/iptables", "--iptables"), fake)
    assert (b.version, b.mode, b.profile.version) == ("1.8.11", "nf_tables", "1.8.11")
    aux = tmp_path / "aux"
    make_exe(str(aux / "iptables-detect.sh"))
    make_exe(str(aux / "xtables-nft-multi"))
    os.symlink("iptables-detect.sh", aux / "iptables")
    fake = FakeIptables()
    (b,), _ = binaries_for(str(aux / "iptables"), run=fake)
    assert fake.calls == [[str(aux / "xtables-nft-multi"), "iptables", "--version"]]
    assert b.argv == (str(aux / "xtables-nft-multi"), "iptables")


def test_binaries_for_auto_none_and_override(tmp_path):
    make_exe(str(tmp_path / "usr/sbin/iptables"))
    fake = FakeIptables()
    found, notes = binaries_for("auto", root=str(tmp_path), run=fake)
    assert [(b.path, b.version, b.role) for b in found] == [("/usr/sbin/iptables", "1.8.9", "runs")]
    assert binaries_for("none") == ((), ("compat.iptables: none: no binary is asked; judged for "
                                         "every modelled version",))
    other = make_exe(str(tmp_path / "other/iptables"))
    (b,), _ = binaries_for("auto", override=other, root=str(tmp_path), run=fake)
    assert (b.path, b.source, b.role) == (other, "--iptables", "asked")


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
    multi = Binary("/aux/iptables", ("/aux/xtables-nft-multi", "iptables"), "bundled")
    assert tool_argv(multi, "ip6", save=True) == ["/aux/xtables-nft-multi", "ip6tables-save"]


def test_the_calls_are_what_kube_router_runs():
    netbird = rule(*P.forward_oif_rule("wt0"), userdata=P.TAG_FORWARD_OIF)
    snap = snap_of(filter_table(netbird), Table("ip", "nat"), Table("arp", "filter"))
    calls = calls_for(snap, analyse(snap, (OLDEST,)))
    texts = [c.text for c in calls]
    assert texts[:3] == ["iptables -t filter -S KUBE-ROUTER-INPUT 1",
                         "iptables -t filter -S INPUT", "iptables -t filter -S KUBE-ROUTER-FORWARD 1"]
    assert KR_CHECK in texts and "iptables -t filter -S FORWARD" in texts
    # no -C INPUT: KUBE-ROUTER-INPUT does not exist yet, kube-router makes it first
    assert not any(t.startswith("iptables -t filter -C INPUT") for t in texts)
    assert "iptables-save -t filter" in texts and "iptables-save -t nat" in texts
    assert not any("arp" in t for t in texts)


def test_cross_check_runs_inside_the_namespace_and_compares(tmp_path):
    ipt = make_exe(str(tmp_path / "iptables"))
    make_exe(str(tmp_path / "iptables-save"))
    netbird = rule(*P.forward_oif_rule("wt0"), userdata=P.TAG_FORWARD_OIF)
    snap = snap_of(filter_table(netbird))
    report = analyse(snap, (OLDEST,))
    fake = FakeIptables()
    verdict = cross_check(ipt, "ns1", calls_for(snap, report), run=fake)
    assert fake.calls[0] == [ipt, "--version"]
    assert all(call[:4] == ["ip", "netns", "exec", "ns1"] for call in fake.calls[1:])
    assert [ipt, "-t", "filter", "-C", "FORWARD", *jump_spec("FORWARD")] in \
        [c[4:] for c in fake.calls]
    assert verdict.version == "iptables v1.8.9 (nf_tables)"
    assert [r.call.text for r in verdict.refused] == [KR_CHECK, "iptables -t filter -S FORWARD"]
    assert compare(report, snap, verdict) == []
    # A reader that thought the chain fine disagrees, loudly, per call
    fine_snap = snap_of(filter_table(rule(*P.iif_accept_rule("wt0"))))
    found = compare(analyse(fine_snap, (OLDEST,)), fine_snap, verdict)
    assert {(d.command, d.analyser, d.fatal, d.failed) for d in found} >= {
        (KR_CHECK, "exits 1", True, True),
        ("iptables -t filter -S FORWARD", "exits 0", True, True)}
    check = CrossCheck.of(analyse(fine_snap, (OLDEST,)), verdict, fine_snap)
    assert len(check.missed()) == 2 and all("reader says exits" in m for m in check.missed())


def test_predictions():
    netbird = rule(*P.forward_oif_rule("wt0"), userdata=P.TAG_FORWARD_OIF, position=0)
    kr = rule(*[], handle=2, position=1)
    snap = snap_of(filter_table(netbird, kr))
    report = analyse(snap, (OLDEST,))
    check = Call("ip", "filter", "check", "FORWARD", tuple(jump_spec("FORWARD")))
    assert predict(report, snap, check) == {3}
    assert predict(report, snap, Call("ip", "filter", "list", "FORWARD")) == {1}
    assert predict(report, snap, Call("ip", "filter", "list", "INPUT")) == {0}
    assert predict(report, snap, Call("ip", "filter", "first", "KUBE-ROUTER-FORWARD")) == {0}
    assert predict(report, snap, Call("ip", "filter", "first", "KUBE-ROUTER-INPUT")) == {1}
    assert predict(report, snap, Call("ip", "filter", "list", "NOPE")) == {1}
    assert predict(report, snap, Call("ip", "filter", "save")) == {"left out"}
    empty = snap_of(filter_table())
    assert predict(analyse(empty), empty, check) == {1}   # walks everything, no match
    assert TableRef("ip", "filter") in snap.tables
