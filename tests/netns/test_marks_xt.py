"""The mark model against what the real iptables writes: MARK, CONNMARK, mark and
connmark as each iptables-nft build encodes them (xt structs, native meta expressions),
decoded from a snapshot of a namespace."""
from __future__ import annotations

import pytest

from fwgate_testing.helpers import delete_netns, in_netns, new_netns, sh
from fwgate_testing.iptables_versions import builds
from fwgate.marks.model import ALL, CT, META, Read, Write, comment_of, rule_marks
from fwgate.marks.owners import owner_of

# iptables arguments → (writes, reads) the model must see
CASES = [
    ("-j MARK --set-xmark 0x10000/0x30000", [Write(META, force0=0x20000, force1=0x10000)], []),
    ("-j MARK --set-mark 0x20000/0x20000", [Write(META, force1=0x20000)], []),
    ("-j MARK --set-mark 0x0/0x10000", [Write(META, force0=0x10000)], []),
    ("-j MARK --set-mark 0x1bd20", [Write(META, force0=ALL & ~0x1bd20, force1=0x1bd20)], []),
    ("-j MARK --or-mark 0x4000", [Write(META, force1=0x4000)], []),
    ("-j MARK --and-mark 0xffff", [Write(META, force0=0xffff0000)], []),
    ("-j MARK --xor-mark 0x4000", [Write(META, toggle=0x4000)], []),
    ("-j CONNMARK --set-mark 0x1bd10", [Write(CT, force0=ALL & ~0x1bd10, force1=0x1bd10)], []),
    ("-j CONNMARK --set-xmark 0x5/0x7", [Write(CT, force0=0x2, force1=0x5)], []),
    ("-j CONNMARK --save-mark --nfmask 0xff --ctmask 0xff00",
     [Write(CT, force0=0xff00 & ~0xff, unknown=0xff)], []),
    ("-j CONNMARK --save-mark", [Write(CT, copied=ALL)], []),
    ("-j CONNMARK --restore-mark", [Write(META, copied=ALL)], []),
    ("-j CONNMARK --restore-mark --nfmask 0xffff0000 --ctmask 0xffff0000",
     [Write(META, copied=0xffff0000)], []),
    ("-m mark --mark 0x1bd20 -j ACCEPT", [], [Read(META, ALL, 0x1bd20)]),
    ("-m mark ! --mark 0x10000/0x10000 -j DROP", [], [Read(META, 0x10000, 0x10000, True)]),
    ("-m connmark --mark 0x1/0x3 -j ACCEPT", [], [Read(CT, 3, 1)]),
    ("-m connmark ! --mark 0xca6c -j ACCEPT", [], [Read(CT, ALL, 0xca6c, True)]),
]


@pytest.fixture(scope="module")
def rules_by_version():
    """{version: [(args, RuleMarks, comment)]}, each from its own namespace."""
    from fwgate.adapters.nfsock import NfSocket
    from fwgate.adapters.nft import snapshot

    out = {}
    for version, bindir in builds().items():
        ns = new_netns("fwt-xt")
        try:
            for args, _, _ in CASES:
                sh(ns, f"{bindir}/iptables", "-t", "mangle", "-A", "FORWARD", "-m", "comment",
                   "--comment", "kube-router netpol - X", *args.split())

            def take():
                with NfSocket() as sock:
                    return snapshot(sock, families=("ip",))
            snap = in_netns(ns, take)
        finally:
            delete_netns(ns)
        (table,) = snap.tables.values()
        out[version] = [(args, rule_marks(r), comment_of(r), owner_of(r, rule_marks(r)))
                        for (args, _, _), r in zip(CASES, table.rules_of("FORWARD"))]
    return out


def test_every_iptables_build_is_read_right(rules_by_version):
    assert rules_by_version, "no iptables-nft build to test with"
    for version, found in rules_by_version.items():
        assert len(found) == len(CASES), version
        for (args, writes, reads), (_, marks, comment, owner) in zip(CASES, found):
            assert (list(marks.writes), list(marks.reads)) == (writes, reads), (version, args)
            assert (comment, owner) == ("kube-router netpol - X", "kube-router"), (version, args)
