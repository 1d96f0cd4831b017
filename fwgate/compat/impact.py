"""Which k3s component runs which iptables command on which chain, and what a failure
of it does. Pure: a finding's place in, its consequences out.

Read in the upstream sources (docs/compat.md, "What k3s runs"):

- kube-router (k3s-io/kube-router v2, network policy controller), in `ip filter` and,
  on dual-stack nodes, `ip6 filter`, at start and at every policy sync (5 min, and on
  any pod/policy/namespace event): ensureTopLevelChains runs `-S KUBE-ROUTER-X 1`
  (go-iptables ChainExists), `-C BUILTIN <jump>`, `-I BUILTIN 1 <jump>` and `-S BUILTIN`
  for INPUT, FORWARD and OUTPUT, `-C`/`-S` in KUBE-ROUTER-INPUT;
  ensureDefaultNetworkPolicyChain / ensureCommonPolicyChain run `-S CHAIN 1` and `-C`
  in KUBE-NWPLCY-DEFAULT / KUBE-NWPLCY-COMMON. Every error there is klog.Fatalf: k3s
  exits. The sync then runs `-t filter -S` (cleanupStaleRules), `iptables-save -t
  filter` and `iptables-restore -T filter` (no --noflush): errors there abort the sync
  (logged; network policies are not applied) and a successful one rewrites the whole
  table from iptables-save's text.
- kube-proxy (iptables mode): `-C`/`-I` of its jumps in filter INPUT/FORWARD/OUTPUT and
  nat PREROUTING/OUTPUT/POSTROUTING, iptables-save of filter and nat; logged, retried.
- flannel: `-C` of its jumps in filter FORWARD and nat POSTROUTING every 50-60 s; logged.

Nothing in k3s runs arptables or ebtables, nor touches mangle, raw or security.
"""
from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

KUBE_ROUTER, KUBE_PROXY, FLANNEL = "kube-router", "kube-proxy", "flannel"
# kube-router's top-level chains: builtin chain -> its own chain (network_policy_controller.go)
KUBE_ROUTER_JUMPS = {"INPUT": "KUBE-ROUTER-INPUT", "FORWARD": "KUBE-ROUTER-FORWARD",
                     "OUTPUT": "KUBE-ROUTER-OUTPUT"}
KUBE_ROUTER_POLICY_CHAINS = ("KUBE-NWPLCY-DEFAULT", "KUBE-NWPLCY-COMMON")
KUBE_ROUTER_COMMENT = "kube-router netpol"
KUBE_PROXY_CHAINS = {"filter": ("INPUT", "FORWARD", "OUTPUT"),
                     "nat": ("PREROUTING", "OUTPUT", "POSTROUTING")}
FLANNEL_CHAINS = {"filter": ("FORWARD",), "nat": ("POSTROUTING",)}

FATAL_EFFECT = "k3s exits (klog.Fatalf) at start-up or at its next policy sync (every 5 min)"
SYNC_EFFECT = ("every sync fails: each policy sync is aborted (logged), network policies are "
               "not applied")
RETRY_EFFECT = "logged and retried: its rules may be missing"


def rule_uuid(chain: str, spec: list[str]) -> str:
    """kube-router's addUUIDForRuleSpec: base32(sha256(chain + joined spec))[:16]."""
    digest = hashlib.sha256((chain + "".join(spec)).encode()).digest()
    return base64.b32encode(digest).decode()[:16]


def jump_spec(builtin: str) -> list[str]:
    """The rule spec kube-router checks for: `-m comment --comment "kube-router netpol -
    UUID" -j KUBE-ROUTER-X` (TEMCG2JMHZYE7H7T for FORWARD)."""
    target = KUBE_ROUTER_JUMPS[builtin]
    spec = ["-m", "comment", "--comment", KUBE_ROUTER_COMMENT, "-j", target]
    spec[3] = f"{KUBE_ROUTER_COMMENT} - {rule_uuid(builtin, spec)}"
    return spec


def shell(argv: list[str]) -> str:
    return " ".join(f'"{a}"' if " " in a else a for a in argv)


@dataclass(frozen=True)
class Setup:
    """What runs on the node (k3s flags/config: --disable-network-policy,
    --disable-kube-proxy, --flannel-backend=none; dual-stack = an IPv6 cluster-cidr).
    dual_stack None: not known; `ip6 filter` then counts as kube-router's when it holds
    kube-router's chains."""

    network_policy: bool = True
    kube_proxy: bool = True
    flannel: bool = True
    dual_stack: bool | None = None


@dataclass(frozen=True)
class Impact:
    component: str
    command: str     # the command as the component runs it
    fatal: bool      # k3s dies on it
    effect: str


def impacts(family: str, table: str, chain: str, position: int, breaks: tuple[str, ...],
            setup: Setup = Setup(), ip6_is_kube_routers: bool = False) -> tuple[Impact, ...]:
    """The calls a rule breaks. breaks: "check" (-C/-D walking past it fails), "list" (-S
    of its chain fails), "save" (iptables-save of its table fails or leaves it out)."""
    if family not in ("ip", "ip6") or not breaks:
        return ()
    tool = "ip6tables" if family == "ip6" else "iptables"
    out: list[Impact] = []
    walk, listing = "check" in breaks, "list" in breaks
    # -S BUILTIN is run only once -C found kube-router's jump, which it inserts when it
    # is missing: a rule that fails listing only kills k3s at the sync after that.
    kube_router = setup.network_policy and (
        family == "ip" or (setup.dual_stack if setup.dual_stack is not None else ip6_is_kube_routers))
    if kube_router and table == "filter":
        checks: list[list[str]] = []   # -C walks the chain: a rule that fails to parse kills it
        lists: list[list[str]] = []    # -S: the listing check and every rule parsed
        if chain in KUBE_ROUTER_JUMPS:
            checks.append(["-C", chain, *jump_spec(chain)])
            lists.append(["-S", chain])
        elif chain == "KUBE-ROUTER-INPUT":
            checks.append(["-C", chain, "<its whitelist rules>"])
            lists.append(["-S", chain])
        elif chain in KUBE_ROUTER_POLICY_CHAINS:
            checks.append(["-C", chain, "<its rules>"])
        if chain in KUBE_ROUTER_JUMPS.values() or chain in KUBE_ROUTER_POLICY_CHAINS:
            # ChainExists: the listing check of the chain and its first rule only
            if listing or (walk and position == 0):
                lists.append(["-S", chain, "1"])
        for argv in (checks if walk else []) + (lists if walk or listing else []):
            out.append(Impact(KUBE_ROUTER, shell([tool, "-t", "filter", *argv]), True,
                              FATAL_EFFECT))
        out.append(Impact(KUBE_ROUTER, f"{tool} -t filter -S; {tool}-save -t filter",
                          False, SYNC_EFFECT))
    if setup.kube_proxy and table in KUBE_PROXY_CHAINS:
        if walk and chain in KUBE_PROXY_CHAINS[table]:
            out.append(Impact(KUBE_PROXY, f"{tool} -t {table} -C {chain} <its jump>", False,
                              RETRY_EFFECT))
        out.append(Impact(KUBE_PROXY, f"{tool}-save -t {table}", False,
                          "logged: stale chains are not cleaned up"))
    if setup.flannel and walk and chain in FLANNEL_CHAINS.get(table, ()):
        out.append(Impact(FLANNEL, f"{tool} -t {table} -C {chain} <its jump>", False,
                          RETRY_EFFECT))
    return tuple(dict.fromkeys(out))


def after_sync(kind: str) -> str:
    """What kube-router's next sync (iptables-save -t filter | iptables-restore -T filter,
    no --noflush) writes back for a rule iptables misreads this way."""
    return _AFTER_SYNC.get(kind, "it is written back as iptables shows it, which is not what "
                                 "it is now")


_AFTER_SYNC = {
    "lookup": "written back without the set lookup: it matches every packet its other "
              "matches do (an accept-all, if that is its verdict)",
    "vmap": "written back without the verdict map: it no longer decides anything (a counter)",
    "map": "written back without the map lookup; what read the map's result now reads "
           "something else",
    "rewrite": "written back without the header rewrite: packets pass unchanged",
    "verdict": "written back without its verdict: matching packets go on to the next rule",
    "icmp": "written back as `--icmp-type N`: a negated or ordered ICMP test becomes an "
            "equality, matching other packets (the opposite ones, for `!=`)",
    "icmp-any": "written back as `--icmp-type any`: it matches every ICMP packet",
    "mask": "written back without the mask: the test compares the whole field",
    "refused": "every sync fails: iptables-restore refuses the table's text (the whole "
               "restore is rejected, network policies are not applied)",
    "aliased": "written back with the comparison applied to another field: it matches "
               "other packets than it does now",
    "nexthdr": "written back as `-p PROTO -m hl --hl-eq PROTO`: it matches only packets whose "
               "hop limit equals the protocol number, almost never",
    "equality": "written back as an exact match on one value: a range or ordering test "
                "becomes an equality test",
    "frag": "written back as `-f` (any non-first fragment), not as the test it is now",
    "transport": "written back without that transport-header test: it matches more packets",
    "range": "written back without the port range: it matches every port",
    "header": "written back without the header test iptables ignores: it matches more packets",
    "overwritten": "written back with only the last of its tests of that field: it matches "
                   "packets the first test excluded",
    "target": "written back with one action only: the other (the mark, trace or log) is lost",
    "shift": "written back without the shift: the comparison tests other bits",
    "devaddr": "written back without the hardware-address test",
    "ethernet": "written back as an Ethernet-header test",
    "protocol": "written back without the protocol test",
    "among": "written back without the MAC set test",
}
