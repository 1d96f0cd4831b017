"""What differs between iptables-nft's rule readers 1.8.9 … 1.8.13, as data. Pure.

One reader (reader.py) models them all; a Profile holds the few switches where the
upstream sources differ (docs/compat.md, "Versions", cites file, function and commit
for each). Everything not listed here is the same in every version: the expressions
the parser has a case for, the register map, the meta keys and header offsets per
family, `-C` walking a chain up to its first match, iptables-save's behaviour, exit
codes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    version: str
    # 1.8.10 moved the parser to nft-ruleparse.c and reads `meta mark set <immediate>` as
    # -j MARK and `meta broute set` as ebtables' broute DROP (7304f198, 73611d55); 1.8.9's
    # nft_meta_set_to_target knows nftrace only. Error texts of `meta set` change with it.
    meta_set_mark: bool
    # ebtables' broute table: emulated from 1.8.10 (73611d55); unknown to 1.8.9.
    broute_table: bool
    # ebtables `meta iif/oif`: parse_meta writes into NULL mask buffers (SIGSEGV) up to
    # 1.8.10; 1.8.11 dropped the masks (9ccae639) and says "unknown bridge meta key".
    bridge_ifindex_crash: bool
    # A bitwise without mask/xor (shifts, kernel 6.13's and/or/xor with sreg2):
    # 1.8.9–1.8.11 read an uninitialised length ("bitwise xor too large" some runs, not
    # others); 1.8.12 says "missing bitwise xor attribute" and its listing check refuses
    # any op but NFT_BITWISE_BOOL (58f2a220).
    bitwise_strict: bool
    # Before parsing a rule for listing and -C, 1.8.11 fills in the family's defaults
    # (0b2e2f38 "Add potentially missing init_cs calls"): arptables then starts from
    # --h-length 6, so an address at offset 14 is the sender IP; before, from 0.
    init_cs: bool
    # 1.8.9's parser keeps one tcp/udp match per rule (nft-shared.c nft_tcp_match and
    # nft_udp_match share ctx->tcpudp): TCP flags after a UDP port test land in the udp
    # match. f5993955 (nft-shared.c, "Lookup matches in iptables_command_state", first in
    # 1.8.10) dropped ctx->tcpudp and finds each match in the rule by name.
    tcpudp_shared: bool = False
    # iptables-restore of `-m udp --sport 1024:21` (min > max): 1.8.9's libxt_udp.c takes
    # it (libxt_tcp.c always said "invalid portrange (min > max)"); 9d41421a
    # (libxtables/xtoptions.c xtopt_parse_mport, "Reject negative port ranges", first in
    # 1.8.11) refuses it: "Port range 1024-21 is negative". Seen with the binaries of
    # 1.8.9 and 1.8.11/1.8.13.
    udp_range_checked: bool = True
    # How iptables-save shows an ICMP code tested without a type (xt_icmp type 255 =
    # any): `--icmp-type any` in 1.8.9; `--icmp-type 255/3` from 5b5430d6
    # (extensions/libipt_icmp.c icmp_save, "Fix confusion between 255/255 and any", first
    # in 1.8.10). Seen with the binaries of 1.8.9, 1.8.11 and 1.8.13. Only the text
    # differs: both match every ICMP type.
    icmp_any_code_shown: bool = True
    # What iptables-save prints for an interface after several tests of it: up to 1.8.10
    # the parser keeps a mask beside the name (nft-shared.c parse_ifname memsets it, never
    # clears it) and save_iface prints by the mask, so `"eth0"` then `"veth*"` shows as
    # `veth++`; 9ccae639 (nft-ruleparse.c, "Leave interface masks alone when parsing from
    # kernel", first in 1.8.11) prints the name as it stands: `veth+`.
    interface_masks: bool = False
    # How iptables-save names a protocol (-p): up to 1.8.10 xtables_chain_protos, then
    # getprotobynumber (/etc/protocols); ff57cd48 (iptables-save: "Avoid /etc/protocols
    # lookups") names only those of xtables_chain_protos, to which a369c736 adds dccp and
    # ipcomp (both first in 1.8.11). Other numbers are printed as numbers.
    save_chain_protos_only: bool = True
    # An inverted full port range (`! --dport 0:65535`): printed from a86eb41e
    # (extensions: tcp/udp "Save/xlate inverted full ranges", first in 1.8.11); before,
    # any full range was left out, inverted or not.
    save_inverted_full_range: bool = True
    # `udp match extension not found` exists from 1.8.10 (1.8.9 returned silently): no
    # extension is ever missing from a packaged iptables, so it changes no verdict here.

    @property
    def key(self) -> tuple[int, ...]:
        return version_key(self.version)


PROFILES: tuple[Profile, ...] = (
    Profile("1.8.9", meta_set_mark=False, broute_table=False, bridge_ifindex_crash=True,
            bitwise_strict=False, init_cs=False, tcpudp_shared=True, udp_range_checked=False,
            icmp_any_code_shown=False, interface_masks=True, save_chain_protos_only=False,
            save_inverted_full_range=False),
    Profile("1.8.10", meta_set_mark=True, broute_table=True, bridge_ifindex_crash=True,
            bitwise_strict=False, init_cs=False, udp_range_checked=False, interface_masks=True,
            save_chain_protos_only=False, save_inverted_full_range=False),
    Profile("1.8.11", meta_set_mark=True, broute_table=True, bridge_ifindex_crash=False,
            bitwise_strict=False, init_cs=True),
    Profile("1.8.12", meta_set_mark=True, broute_table=True, bridge_ifindex_crash=False,
            bitwise_strict=True, init_cs=True),
    # v1.8.12..v1.8.13 changes one const in xshared.c: the reader is 1.8.12's.
    Profile("1.8.13", meta_set_mark=True, broute_table=True, bridge_ifindex_crash=False,
            bitwise_strict=True, init_cs=True),
)
BY_VERSION = {p.version: p for p in PROFILES}
OLDEST, NEWEST = PROFILES[0], PROFILES[-1]


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", version)[:3])


def profile_for(version: str | None) -> Profile | None:
    """The reader a version runs: the newest profile not newer than it (1.8.10.1 → 1.8.10;
    1.8.14 → 1.8.13, the newest modelled); an older one than 1.8.9 gets 1.8.9's. None
    when the version is unknown."""
    if not version or not re.search(r"\d", version):
        return None
    key = version_key(version)
    fitting = [p for p in PROFILES if p.key <= key]
    return fitting[-1] if fitting else OLDEST


_VERSION = re.compile(r"v(\d+(?:\.\d+)+)\s*(?:\((nf_tables|legacy)\))?")


def parse_version(text: str) -> tuple[str | None, str | None]:
    """("1.8.9", "nf_tables") from `iptables --version`'s "iptables v1.8.9 (nf_tables)";
    (None, None) if it is not that."""
    m = _VERSION.search(text or "")
    return (m.group(1), m.group(2)) if m else (None, None)
