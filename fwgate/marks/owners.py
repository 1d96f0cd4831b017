"""Which component wrote a rule, from one table of signs. Pure.

A sign is (component, where, prefix). Where, strongest first:
  tag      the rule's raw userdata is exactly this (Netbird tags its rules so)
  chain    the rule's chain name starts so
  comment  its comment (iptables' `-m comment`, nft's userdata comment) starts so
  jump     a chain it jumps or goes to starts so (the jump from a built-in chain)
  table    its table name starts so
The longest prefix wins within a kind. After them, for rules a component puts straight
into a built-in chain with no name or comment of its own, two more kinds (SHAPES):
  marks    the marks it writes or tests are the component's own values or bits
  iface    the interface it requires is the component's
A new component is one more line. Where each name comes from is in docs/marks.md.
"""
from __future__ import annotations

from functools import lru_cache

from ..model import Rule
from ..netbird import TAGS as NETBIRD_TAGS
from .model import ALL, Read, RuleMarks, Write, comment_of

UNKNOWN = "unknown"

SIGNS: tuple[tuple[str, str, str], ...] = (
    *(("netbird", "tag", tag.decode()) for tag in NETBIRD_TAGS),
    ("netbird", "chain", "netbird-"), ("netbird", "chain", "NETBIRD-"),
    ("netbird", "table", "netbird"),
    ("kube-router", "chain", "KUBE-ROUTER-"), ("kube-router", "chain", "KUBE-POD-FW-"),
    ("kube-router", "chain", "KUBE-NWPLCY-"), ("kube-router", "comment", "kube-router netpol"),
    # kube-router's own rules in the built-in chains (network_policy_controller.go
    # ensureExplicitAccept; k3s's fork words it "KUBE-ROUTER rule to ...").
    ("kube-router", "comment", "KUBE-ROUTER rule to"),
    ("kube-router", "comment", "rule to explicitly ACCEPT traffic that comply to network"),
    ("kube-router", "comment", "rule to mark traffic matching a network policy"),
    ("kubelet", "chain", "KUBE-FIREWALL"), ("kubelet", "chain", "KUBE-MARK-DROP"),
    ("kubelet", "chain", "KUBE-KUBELET-CANARY"),
    ("kube-proxy", "chain", "KUBE-"), ("kube-proxy", "comment", "kubernetes "),
    ("kube-proxy", "table", "kube-proxy"),
    ("flannel", "chain", "FLANNEL-"), ("flannel", "comment", "flanneld "),
    ("flannel", "table", "flannel-"),   # its nftables mode: flannel-ipv4, flannel-ipv6
    ("cni-portmap", "chain", "CNI-HOSTPORT-"), ("cni-portmap", "chain", "CNI-DN-"),
    ("calico", "chain", "cali-"), ("calico", "comment", "cali:"),
    ("cilium", "chain", "CILIUM_"), ("cilium", "chain", "OLD_CILIUM_"),
    ("cilium", "comment", "cilium"),
    ("docker", "chain", "DOCKER"),
    ("tailscale", "chain", "ts-"),
    ("wg-quick", "table", "wg-quick-"), ("wg-quick", "comment", "wg-quick(8) rule for"),
    ("firewalld", "table", "firewalld"),
)

_KINDS = ("chain", "comment", "jump", "table")

# Rule shapes: (component, kind, value, mask).
#   marks: a whole-mark write or an exact test whose value & mask == value, or a write
#          or test of exactly the bits `mask` (value 0);
#   iface: the rule requires this input or output interface (value: the name).
SHAPES: tuple[tuple[str, str, object, int], ...] = (
    # Netbird's marks are whole values 0x1bd00-0x1bdff (netbirdio/netbird client/net/net.go
    # ControlPlaneMark, DataPlaneMark*, PreroutingFwmark*); in iptables mode it writes
    # `-m mark --mark 0x1bd20 -j ACCEPT` into FORWARD, the mangle FORWARD guard
    # `-m mark ! --mark 0x1bd20 -j DROP`, `CONNMARK --set-mark 0x1bd10` / `0x1bd11` into
    # mangle PREROUTING / POSTROUTING (client/firewall/iptables/acl_linux.go
    # seedInitialEntries, seedInitialOptionalEntries; router_linux.go setupDataPlaneMark).
    ("netbird", "marks", 0x1BD00, 0xFFFFFF00),
    # Tailscale's bits 0xff0000: CONNMARK --restore-mark / --save-mark --nfmask 0xff0000
    # --ctmask 0xff0000 straight into mangle PREROUTING / OUTPUT (tailscale/tailscale
    # util/linuxfw/iptables_runner.go AddConnmarkSaveRule).
    ("tailscale", "marks", 0, 0xFF0000),
    # their interfaces' default names: Netbird's wt0 (client/iface), Tailscale's tailscale0
    ("netbird", "iface", "wt0", 0),
    ("tailscale", "iface", "tailscale0", 0),
)


def _owns_write(value: int, mask: int, w: Write) -> bool:
    if value:
        return (w.force0 | w.force1) == ALL and w.force1 & mask == value
    return w.bits == mask


def _owns_read(value: int, mask: int, r: Read) -> bool:
    if value:
        return r.mask == ALL and r.value is not None and r.value & mask == value
    return r.mask == mask


def _shape(marks: RuleMarks) -> str | None:
    for component, kind, value, mask in SHAPES:
        if kind == "marks":
            if any(_owns_write(value, mask, w) for w in marks.writes) or \
                    any(_owns_read(value, mask, r) for r in marks.reads):
                return component
        elif value in (marks.iif, marks.oif):
            return component
    return None


def _by_kind() -> dict[str, list[tuple[str, str]]]:
    """{kind: [(prefix, component)]}, longest prefix first."""
    out: dict[str, list[tuple[str, str]]] = {"tag": [], **{k: [] for k in _KINDS}}
    for component, kind, prefix in SIGNS:
        out[kind].append((prefix, component))
        if kind == "chain":   # a jump to a component's chain is that component's rule
            out["jump"].append((prefix, component))
    for signs in out.values():
        signs.sort(key=lambda s: -len(s[0]))
    return out


_SIGNS = _by_kind()
_TAGS = {prefix.encode(): component for prefix, component in _SIGNS["tag"]}


@lru_cache(maxsize=65536)   # chain names repeat for every rule of the chain
def _first(kind: str, name: str | None) -> str | None:
    if name:
        for prefix, component in _SIGNS[kind]:
            if name.startswith(prefix):
                return component
    return None


def owner_of(rule: Rule, marks: RuleMarks) -> str:
    """The component that wrote the rule, or "unknown"."""
    if rule.userdata and rule.userdata in _TAGS:
        return _TAGS[rule.userdata]
    return (_first("chain", rule.chain) or _first("comment", comment_of(rule))
            or next(filter(None, (_first("jump", t) for t in marks.jumps)), None)
            or _first("table", rule.table) or _shape(marks) or UNKNOWN)
