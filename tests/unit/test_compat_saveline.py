"""What iptables-save prints for a rule, as the model renders it (fwgate.compat.saveline).

The lines expected here are the ones the real binaries printed for the same rules (the
differential run compares every misread rule's line with the binary's iptables-save:
bench/results.md section 11; tests/netns/test_compat_generated.py keeps cases)."""
from __future__ import annotations

import socket

from fwgate.compat.profiles import BY_VERSION
from fwgate.compat.reader import analyse
from fwgate.report import report_json
from fwgate.compat.saveline import saved_line
from fwgate.netlink import consts as C
from fwgate.netlink import exprs as X

from fwgate_testing.compat_rules import l4proto, payload_cmp, rule, snap

OLD, NEW = BY_VERSION["1.8.9"], BY_VERSION["1.8.11"]
T = C.PAYLOAD_TRANSPORT
N = C.PAYLOAD_NETWORK


def test_an_icmp_negation_is_saved_as_the_equality_iptables_read():
    r = rule(*l4proto(1), *payload_cmp(T, 0, 1, bytes([8]), C.CMP_NEQ), X.counter(),
             X.verdict(C.NF_DROP))
    assert saved_line(r, OLD) == "-A FORWARD -p icmp -m icmp --icmp-type 8 -j DROP"


def test_an_icmp_code_alone_is_any_in_1_8_9_and_255_code_later():
    r = rule(*l4proto(1), *payload_cmp(T, 1, 1, bytes([3])), X.verdict(C.NF_ACCEPT))
    assert saved_line(r, OLD) == "-A FORWARD -p icmp -m icmp --icmp-type any -j ACCEPT"
    assert saved_line(r, NEW) == "-A FORWARD -p icmp -m icmp --icmp-type 255/3 -j ACCEPT"


def test_addresses_interfaces_ports_and_a_masked_port():
    r = rule(*payload_cmp(N, 12, 1, bytes([10])),
             X.meta_load(C.META_IIFNAME), X.cmp(C.CMP_NEQ, b"eth"),
             *l4proto(6),
             X.payload_load(T, 2, 2), X.bitwise(1, 1, b"\xff\x00", b"\0\0"),
             X.cmp(C.CMP_EQ, (1024).to_bytes(2, "big")),
             X.verdict(C.NFT_JUMP, "GEN"))
    assert saved_line(r, NEW) == \
        "-A FORWARD -s 10.0.0.0/8 ! -i eth+ -p tcp -m tcp --dport 1024 -j GEN"


def test_ip6_address_and_nexthdr_read_also_as_a_hop_limit():
    addr = socket.inet_pton(socket.AF_INET6, "fd00::")
    r = rule(*payload_cmp(N, 8, 8, addr[:8]), *payload_cmp(N, 6, 1, bytes([17])),
             family="ip6", chain="INPUT")
    assert saved_line(r, OLD) == "-A INPUT -s fd00::/64 -p udp -m hl --hl-eq 17"


def test_a_mark_under_a_mask_and_a_goto():
    mark = (0x4000).to_bytes(4, "little")
    r = rule(X.meta_load(C.META_MARK), X.bitwise(1, 1, (0xff00).to_bytes(4, "little"), b"\0" * 4),
             X.cmp(C.CMP_EQ, mark), X.verdict(C.NFT_GOTO, "GEN"))
    assert saved_line(r, OLD) == "-A FORWARD -m mark --mark 0x4000/0xff00 -g GEN"


def test_a_set_lookup_is_left_out_and_a_rule_of_nothing_is_the_chain_alone():
    r = rule(X.meta_load(C.META_OIFNAME), X.lookup("s"), X.counter())
    assert saved_line(r, NEW) == "-A FORWARD"


def test_an_interface_index_other_than_lo_cannot_be_named():
    r = rule(X.meta_load(C.META_IIF), X.cmp(C.CMP_EQ, (7).to_bytes(4, "little")))
    assert saved_line(r, NEW) is None


def test_json_and_words_name_the_rule_the_sync_writes_back():
    r = rule(*l4proto(1), *payload_cmp(T, 0, 1, bytes([8]), C.CMP_NEQ), X.verdict(C.NF_DROP))
    report = analyse(snap(r), (OLD,))
    wrong = report_json(report)["misread"][0]
    assert wrong["written_back"] == "-A FORWARD -p icmp -m icmp --icmp-type 8 -j DROP"
    assert "writes back `-A FORWARD -p icmp -m icmp --icmp-type 8 -j DROP`" in wrong["after_sync"]


def test_a_refused_line_is_named_as_what_every_sync_fails_on():
    r = rule(X.meta_load(C.META_IIFNAME), X.cmp(C.CMP_EQ, X.ifname_bytes("eth0", True)),
             X.verdict(C.NF_DROP), chain="OUTPUT")
    wrong = report_json(analyse(snap(r), (OLD,)))["misread"][0]
    assert wrong["kind"] == "refused"
    assert "every sync fails" in wrong["after_sync"]
    assert "the line it refuses: `-A OUTPUT -i eth0 -j DROP`" in wrong["after_sync"]


def test_a_breakage_says_every_sync_fails():
    ct = [X.ct_load(C.CT_STATE), X.cmp(C.CMP_NEQ, b"\0\0\0\0")]
    out = report_json(analyse(snap(rule(*ct, X.verdict(C.NF_ACCEPT))), (OLD,)))
    assert "every sync fails" in out["incompatible"][0]["after_sync"]


def test_interface_masks_up_to_1_8_10_print_a_second_plus():
    # seen with the binaries: `oifname "eth0" oifname "veth*"` in INPUT
    r = rule(X.meta_load(C.META_OIFNAME), X.cmp(C.CMP_EQ, X.ifname_bytes("eth0", True)),
             X.meta_load(C.META_OIFNAME), X.cmp(C.CMP_EQ, b"veth"),
             X.verdict(C.NFT_JUMP, "GEN"), chain="INPUT")
    assert saved_line(r, OLD) == "-A INPUT -o veth++ -j GEN"
    assert saved_line(r, NEW) == "-A INPUT -o veth+ -j GEN"


def test_each_version_keeps_its_own_line_in_a_report_for_every_version():
    r = rule(*l4proto(1), *payload_cmp(T, 1, 1, bytes([3])), X.verdict(C.NF_ACCEPT))
    report = analyse(snap(r))   # every modelled version
    lines = {v: report.for_version(v).misread[0] for v in ("1.8.9", "1.8.10", "1.8.13")}
    assert lines["1.8.9"].written_back == "-A FORWARD -p icmp -m icmp --icmp-type any -j ACCEPT"
    assert lines["1.8.10"].written_back == lines["1.8.13"].written_back == \
        "-A FORWARD -p icmp -m icmp --icmp-type 255/3 -j ACCEPT"
    assert "255/3" in lines["1.8.13"].after_sync and "255/3" not in lines["1.8.9"].after_sync
