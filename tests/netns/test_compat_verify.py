"""`fwgate compat --verify`: the binary's own save → restore round trip of the node's
tables in a scratch namespace, beside the model. Real kernel, real binaries of every
version here, the CLI as a process."""
from __future__ import annotations

import json
import subprocess

import pytest

from fwgate_testing.helpers import fwgate_cmd, sh
from fwgate_testing.iptables_versions import builds

VERSIONS = builds()
KR = ["-m", "comment", "--comment", "kube-router netpol - TEMCG2JMHZYE7H7T", "-j",
      "KUBE-ROUTER-FORWARD"]


def _node(ns: str, *rules: str) -> None:
    sh(ns, "iptables", "-N", "KUBE-ROUTER-FORWARD")
    sh(ns, "iptables", "-N", "GEN")
    sh(ns, "iptables", "-A", "FORWARD", *KR)
    for rule in rules:
        sh(ns, "nft", f"add rule ip filter FORWARD {rule}")


def _verify(ns: str, bindir: str) -> dict:
    done = subprocess.run([*fwgate_cmd(), "--netns", ns, "compat", "--verify", "--json",
                           "--iptables", f"{bindir}/iptables"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 3), done.stderr
    out = json.loads(done.stdout)
    (trip,) = [t for t in out["verify"] if (t["family"], t["table"]) == ("ip", "filter")]
    return trip


@pytest.mark.parametrize("version", list(VERSIONS))
def test_a_misread_rule_comes_back_changed(netns, version):
    _node(netns, "icmp type != echo-request drop", "tcp dport 22 accept")
    trip = _verify(netns, VERSIONS[version])
    assert trip["saved"] == "saved" and trip["restore_error"] is None
    assert [(c["chain"], c["position"], c["model"]) for c in trip["changed"]] == \
        [("FORWARD", 1, "icmp")]
    assert '"right":8' in trip["changed"][0]["now"] and "[8,8]" in trip["changed"][0]["after"]
    assert trip["disagreements"] == []


@pytest.mark.parametrize("version", list(VERSIONS))
def test_a_restore_iptables_refuses(netns, version):
    _node(netns, "log group 1 goto GEN")
    trip = _verify(netns, VERSIONS[version])
    assert "nflog-group" in trip["restore_error"]
    assert trip["disagreements"] == []


def test_a_clean_table_comes_back_the_same(netns):
    _node(netns, "tcp dport 22 accept", "ip saddr 10.0.0.0/8 iifname \"eth*\" return")
    trip = _verify(netns, VERSIONS[max(VERSIONS)])
    assert trip["changed"] == [] and trip["gone_chains"] == [] and trip["disagreements"] == []


def test_the_model_saying_nothing_of_a_changed_rule_is_a_disagreement(netns):
    """The comparison itself: a table whose rule changes while the model is silent must
    show up (checked without a binary: against an empty report)."""
    from fwgate.compat.reader import CompatReport
    from fwgate.compat.roundtrip import against_model
    from fwgate.adapters.roundtrip import Changed, TableTrip
    trip = TableTrip("ip", "filter", "x", "saved",
                     changed=[Changed("FORWARD", 0, 7, "[a]", "[b]")])
    out = against_model(trip, CompatReport())
    assert out["disagreements"] == ["FORWARD rule 0 (handle 7) comes back changed; the model "
                                    "says nothing"]
