"""Every disagreement the differential generator (tests/fwgate_testing/differential.py) has found, kept as
a case: each runs as the generator runs it (fresh namespaces, kube-router's state, every
version's binaries, the save → restore round trip) and must still show the ground truth it
showed then, per version, and the reader must agree with it; for a misread rule the model
must name the rule the restore writes back, equal to the line iptables-save wrote. Found by
tests/netns/test_compat_differential.py and bench/compat_differential.py; the finding run
is named per case.
"""
from __future__ import annotations

import pytest

from fwgate_testing.differential import Case, judge
from fwgate_testing.iptables_versions import builds

VERSIONS = builds()

# (case, ground truth: {"*": all versions, "1.8.9": …}, why the reader missed it before)
GENERATED = [
    (Case("ip", "filter", "FORWARD", "above", "tcp flags == syn accept"), {"*": "blocking"},
     "a TCP flags byte without a mask: -S and iptables-save crash (SIGSEGV), -C works"),
    (Case("ip", "filter", "FORWARD", "below", "meta l4proto tcp @th,104,8 0x2 drop"),
     {"*": "blocking"}, "the same byte as a raw load: -S FORWARD crashes below the jump"),
    (Case("ip6", "mangle", "FORWARD", "end", "tcp flags == 0x12 counter accept"),
     {"*": "broken"}, "the crash outside kube-router's chains: logged, not fatal"),
    (Case("ip", "filter", "FORWARD", "below", "icmp type != echo-request drop"),
     {"*": "misread"}, "ICMP negation comes back as --icmp-type 8"),
    (Case("ip", "filter", "INPUT", "above", "icmp type > 3 drop"), {"*": "misread"},
     "ICMP ordering comes back as an equality"),
    (Case("ip", "filter", "FORWARD", "above", "icmp type 255 accept"), {"*": "misread"},
     "ICMP type 255 is xt_icmp's `any`"),
    (Case("ip", "filter", "FORWARD", "above", "icmp code 3 accept"), {"*": "misread"},
     "a code without a type comes back as any ICMP"),
    (Case("ip", "mangle", "OUTPUT", "end", "udp dport & 0xff00 == 1024"), {"*": "misread"},
     "a masked port comes back as a plain port"),
    (Case("ip", "filter", "FORWARD", "above", "ip ttl 5 ip protocol tcp accept"),
     {"*": "misread"}, "nft merges TTL and protocol into one load; iptables reads a TTL"),
    (Case("ip", "raw", "OUTPUT", "end", "ip frag-off & 0x1fff == 0 ip frag-off & 0x1fff != 0"),
     {"*": "misread"}, "two fragment tests: iptables keeps one"),
    (Case("ip6", "filter", "INPUT", "below", "udp dport != 1000-2000 udp dport { 443 } counter"),
     {"*": "misread"}, "a port range and a port: iptables keeps one"),
    (Case("ip", "filter", "FORWARD", "above", "ip saddr 10.0.0.1 continue"), {"*": "ok"},
     "continue was reported as a lost verdict"),
    (Case("ip6", "mangle", "INPUT", "end", "continue"), {"*": "ok"},
     "continue alone was reported as a lost verdict"),
    (Case("ip", "raw", "OUTPUT", "end", 'iifname == "eth0" counter drop'),
     {"*": "sync fails"}, "-i in OUTPUT: iptables-restore refuses it"),
    (Case("ip", "mangle", "PREROUTING", "end", "log group 1 jump GEN"), {"*": "sync fails"},
     "NFLOG's options after -j CHAIN: iptables-restore refuses them"),
    (Case("ip", "filter", "FORWARD", "below", "icmp type 3 ip protocol 47 counter"),
     {"*": "sync fails"}, "-p 47 -m icmp: the kernel refuses the restored match"),
    (Case("ip", "filter", "FORWARD", "below", "tcp dport 22 ip protocol 47"),
     {"*": "sync fails"}, "-p 47 -m tcp: TCP match requires '-p tcp'"),
    (Case("ip6", "nat", "POSTROUTING", "end", "drop"), {"*": "sync fails"},
     "DROP in nat: iptables-restore refuses it"),
    (Case("ip", "mangle", "INPUT", "end", "ip saddr & 255.255.0.0 != 10.0.0.0/8 accept"),
     {"*": "sync fails"}, "an all-zero mask shown as `! -s A/0`: restore writes what the "
                          "kernel refuses"),
    (Case("ip6", "filter", "OUTPUT", "below",
          "udp dport != { 53 } meta l4proto tcp @th,104,8 0x12 counter accept"),
     {"1.8.9": "sync fails", "*": "blocking"},
     "1.8.9 writes TCP flags into the rule's UDP match (no crash, -p tcp -m udp refused); "
     "later versions make a tcp match and crash listing it"),
    (Case("ip", "filter", "FORWARD", "below", "meta mark set 0x1"),
     {"1.8.9": "blocking", "*": "ok"}, "1.8.10+ restore it as an xt MARK target: the same"),
    (Case("ip6", "mangle", "OUTPUT", "end",
          "tcp flags == syn tcp flags & (syn | ack) == syn goto GEN"), {"*": "misread"},
     "two flags tests: the last one's mask is printed (no crash), the first is lost"),
    (Case("ip6", "mangle", "OUTPUT", "end",
          "tcp flags & (syn | ack) == syn tcp flags == syn goto GEN"), {"*": "broken"},
     "two flags tests: the last one has no mask, listing crashes"),
    (Case("ip6", "mangle", "INPUT", "end", "ip6 daddr & ffff:ffff:: == 2001:db8::9 drop"),
     {"*": "misread"}, "address bits outside the mask: nft matches nothing, iptables "
                       "restores the masked address"),
    (Case("ip6", "nat", "OUTPUT", "end", "drop"), {"*": "sync fails"},
     "DROP in nat OUTPUT: the verdict memo mixed up filter OUTPUT and nat OUTPUT"),
    (Case("ip6", "filter", "OUTPUT", "above", "tcp dport > 1024 tcp dport < 80"),
     {"*": "sync fails"}, "two bounds giving 1025:79: invalid portrange on restore"),
    (Case("ip", "mangle", "POSTROUTING", "end",
          "icmp type 3 icmp code 0 icmp type 3 icmp code 0 return"), {"*": "ok"},
     "a code test read as `any` is harmless when a type+code test pins the same code"),
    (Case("ip6", "raw", "PREROUTING", "end",
          "udp sport == 1024-65535 udp sport > 80 ip6 hoplimit == 1-10"), {"*": "misread"},
     "a port range (>= and <=) then > 80: iptables keeps 81:65535"),
    (Case("ip", "filter", "FORWARD", "below",
          "meta l4proto != icmp icmp type & 0xf0 != echo-reply ip ttl & 0xf0 != 5 accept"),
     {"*": "sync fails"}, "a `!=` protocol test keeps -p inverted: `! -p icmp -m icmp` is "
                          "refused by the kernel"),
    (Case("ip", "filter", "FORWARD", "below", "meta l4proto != udp tcp dport 22 accept"),
     {"*": "misread"}, "`! -p tcp -m tcp` restores (add_nft_tcp reads the value only)"),
    (Case("ip6", "filter", "FORWARD", "below", "udp sport 1024-65535 udp sport < 22 return"),
     {"1.8.9": "ok", "*": "sync fails"}, "`--sport 1024:21`: 1.8.9's libxt_udp restores it "
                                         "(matches nothing, as before), 1.8.11 refuses it"),
    (Case("ip6", "filter", "FORWARD", "above",
          "icmpv6 type >= 1 icmpv6 type >= 1 icmpv6 type 1 return"), {"*": "ok"},
     "`>= 1` read as `== 1` beside `== 1`: the same types either way"),
    (Case("ip", "filter", "NB", "end", "ct state new accept"), {"*": "dropped"},
     "a base chain iptables does not know: gone after the round trip"),
    (Case("ip", "filter", "INPUT", "above",
          'oifname == "eth0" oifname "veth*" oifname "veth*" jump GEN'), {"*": "sync fails"},
     "written back: 1.8.9 prints the interface by the mask it keeps (`-o veth++`)"),
    (Case("ip", "filter", "FORWARD", "below", "icmp code >= 0 icmp code >= 0 counter"),
     {"*": "ok"}, "a code test that selects every code: `--icmp-type any` matches the same "
                  "packets (found once the whole-range normalisation made the truth ok)"),
    (Case("ip6", "filter", "FORWARD", "above", 'udp sport <= 65535 iifname "eth0" continue'),
     {"*": "ok"}, "a port test over the whole range comes back as the protocol test alone: "
                  "the same packets (the round trip's normalisation missed it)"),
]

def _check(case: Case, truth: dict) -> None:
    result = judge(case, VERSIONS)
    assert result.valid, result.error
    wrong = []
    for version, res in result.versions.items():
        want = truth.get(version, truth["*"])
        if res.truth != want:
            wrong.append(f"{version}: ground truth is now {res.truth}, was {want}")
        if res.truth in ("misread", "sync fails") and res.back_ok is not True:
            # the model names the rule the restore writes back, as iptables-save wrote it
            wrong.append(f"{version}: written back: model `{res.written_back}`, "
                         f"iptables-save `{res.saved_rule}`")
    if not result.agrees:
        wrong.append(result.describe())
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("case,truth,why", GENERATED, ids=[c.id for c, _, _ in GENERATED])
def test_generated(netns, case: Case, truth: dict, why: str):
    _check(case, truth)
