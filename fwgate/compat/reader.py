"""Which rules iptables-nft cannot read, and why: one model of its reader, with the few
differences between versions 1.8.9 … 1.8.13 as a Profile (profiles.py). Pure:
snapshots in, reports out.

iptables-nft reads the kernel's rules back in three steps, and each can go wrong:

1. Its cache keeps only the tables it has names for (filter, nat, mangle, raw,
   security; arptables' filter; ebtables' filter, nat and, from 1.8.10, broute) and,
   in them, base chains whose name, hook, priority and type are its built-in ones
   (nft-cache.c nft_cache_add_base_chain): any other base chain, and its rules, it
   never sees.
2. Listing (`-S`, `-L`, `iptables-save`) checks every expression of the chain (the
   table, for `-S` without a chain and for iptables-save) against a fixed list
   (nft.c nft_is_expr_compatible). Anything else: "chain `X' in table `T' is
   incompatible, use 'nft' tool." (exit 1); iptables-save leaves the table out.
3. Parsing a rule (`-C`/`-D` parse each rule of the chain up to the one they look
   for; listing parses every rule) walks the expressions and tracks what each
   register holds (nft_rule_to_iptables_command_state). Expressions it has no case
   for (ct, fib, rt, socket, numgen, ...) are skipped, so the register they load stays
   "undefined" to it and the cmp reading it fails: "Error: cmp sreg undef" / "Parsing
   nftables rule failed" (exit 3). Other errors: meta keys and header fields it has
   no iptables equivalent for, and so on.

What it silently gets wrong is a "misread": set lookups and header rewrites it drops,
comparisons it reads as equality, a cmp reading a register that a skipped expression
loaded while an earlier load still sits in iptables' idea of that register (its
register map gives NFT_REG32_xx the slot xx, so NFT_REG32_01 shares NFT_REG_1's), ...
kube-router's restore writes misread rules back as iptables read them.

The model of the parser and of the listing check is parser.py (a rule in, a RuleVerdict
out); memo.py remembers verdicts by the rule's shape (`verdicts()`: a rule's verdict
depends on its expressions' shape, not on its addresses, ports, comments or jump
targets); this module says what the verdicts mean on a node: findings, their impacts
and what kube-router's next sync does, the report. Its JSON is built in fwgate/report.py.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from ..model import Rule, Snapshot, Table, TableRef
from ..netlink import consts as C
from ..netlink.attrs import iter_packed
from .equivalents import iptables_equivalent
from .impact import (
    KUBE_ROUTER_JUMPS, SYNC_EFFECT, Impact, Setup, after_sync, impacts, jump_spec,
)
from .memo import verdicts
from .parser import (
    _FATAL, _NETWORK, _TCP, _TRANSPORT, _UDP, RuleVerdict, _normalise, describe, read_rule,
)
from .profiles import BY_VERSION, OLDEST, PROFILES, Profile, profile_for
from .saveline import saved_line

# Tables iptables-nft has names for (nft.c xtables_ipv4/xtables_arp/xtables_bridge);
# bridge broute only from 1.8.10 (see tables_named()).
IPTABLES_TABLES: dict[str, tuple[str, ...]] = {
    "ip": ("filter", "nat", "mangle", "raw", "security"),
    "ip6": ("filter", "nat", "mangle", "raw", "security"),
    "arp": ("filter",),
    "bridge": ("filter", "nat", "broute"),
}
XT_EXPRESSIONS = ("match", "target")

# iptables-nft's own priorities (nft.c; security is its 150, not the kernel's 50) and
# ebtables' (linux/netfilter_bridge.h NF_BR_PRI_*).
_PRI_RAW, _PRI_MANGLE, _PRI_NAT_DST, _PRI_FILTER, _PRI_SECURITY, _PRI_NAT_SRC = \
    -300, -150, -100, 0, 150, 100
_BR_PRI_FIRST, _BR_PRI_NAT_DST_BRIDGED, _BR_PRI_FILTER_BRIDGED = -2**31, -300, -200
_BR_PRI_NAT_DST_OTHER, _BR_PRI_NAT_SRC = 100, 300
_NF_ARP_IN, _NF_ARP_OUT = 0, 1
_PRE, _IN, _FWD, _OUT, _POST = (C.NF_INET_PRE_ROUTING, C.NF_INET_LOCAL_IN, C.NF_INET_FORWARD,
                                C.NF_INET_LOCAL_OUT, C.NF_INET_POST_ROUTING)
_IP_CHAINS = {
    "raw": {"PREROUTING": (_PRE, _PRI_RAW, "filter"), "OUTPUT": (_OUT, _PRI_RAW, "filter")},
    "mangle": {"PREROUTING": (_PRE, _PRI_MANGLE, "filter"), "INPUT": (_IN, _PRI_MANGLE, "filter"),
               "FORWARD": (_FWD, _PRI_MANGLE, "filter"), "OUTPUT": (_OUT, _PRI_MANGLE, "route"),
               "POSTROUTING": (_POST, _PRI_MANGLE, "filter")},
    "filter": {"INPUT": (_IN, _PRI_FILTER, "filter"), "FORWARD": (_FWD, _PRI_FILTER, "filter"),
               "OUTPUT": (_OUT, _PRI_FILTER, "filter")},
    "security": {"INPUT": (_IN, _PRI_SECURITY, "filter"), "FORWARD": (_FWD, _PRI_SECURITY, "filter"),
                 "OUTPUT": (_OUT, _PRI_SECURITY, "filter")},
    "nat": {"PREROUTING": (_PRE, _PRI_NAT_DST, "nat"), "INPUT": (_IN, _PRI_NAT_SRC, "nat"),
            "POSTROUTING": (_POST, _PRI_NAT_SRC, "nat"), "OUTPUT": (_OUT, _PRI_NAT_DST, "nat")},
}
BUILTIN_CHAINS: dict[tuple[str, str], dict[str, tuple[int, int, str]]] = {
    **{(fam, t): chains for fam in ("ip", "ip6") for t, chains in _IP_CHAINS.items()},
    ("arp", "filter"): {"INPUT": (_NF_ARP_IN, _PRI_FILTER, "filter"),
                        "OUTPUT": (_NF_ARP_OUT, _PRI_FILTER, "filter")},
    ("bridge", "filter"): {"INPUT": (_IN, _BR_PRI_FILTER_BRIDGED, "filter"),
                           "FORWARD": (_FWD, _BR_PRI_FILTER_BRIDGED, "filter"),
                           "OUTPUT": (_OUT, _BR_PRI_FILTER_BRIDGED, "filter")},
    ("bridge", "nat"): {"PREROUTING": (_PRE, _BR_PRI_NAT_DST_BRIDGED, "filter"),
                        "OUTPUT": (_OUT, _BR_PRI_NAT_DST_OTHER, "filter"),
                        "POSTROUTING": (_POST, _BR_PRI_NAT_SRC, "filter")},
    ("bridge", "broute"): {"BROUTING": (_PRE, _BR_PRI_FIRST, "filter")},
}

# What breaks when iptables-nft meets the rule.
BREAKS_CHECK = "check"   # -C/-D of a rule further down the chain (kube-router's start-up check)
BREAKS_LIST = "list"     # -S/-L of the chain
BREAKS_SAVE = "save"     # iptables-save of the table

def tables_named(family: str, profile: Profile) -> tuple[str, ...]:
    names = IPTABLES_TABLES.get(family, ())
    return names if profile.broute_table else tuple(n for n in names if n != "broute")


# --- results -------------------------------------------------------------------

@dataclass(frozen=True)
class ChainRef:
    family: str
    table: str
    chain: str


@dataclass(frozen=True)
class DroppedChain:
    """A base chain iptables-nft leaves out of its cache, with every rule in it."""

    family: str
    table: str
    chain: str
    why: str
    rules: int

    @property
    def after_sync(self) -> str | None:
        """kube-router restores ip (and ip6) filter from iptables-save's text without
        --noflush: a chain iptables never saw is not in it."""
        if self.table == "filter" and self.family in ("ip", "ip6"):
            return (f"deleted at every sync: kube-router's restore rebuilds {self.family} filter "
                    f"without the chain {self.chain} and its {self.rules} rule(s)")
        return None


@dataclass(frozen=True)
class Finding:
    rule: Rule
    reason: str                          # one line, in words an operator understands
    repairable: bool = False
    breaks: tuple[str, ...] = ()         # BREAKS_*; empty for a misread rule
    iptables_error: str | None = None    # what its rule parser prints after "Error: " (exit 3)
    unlisted: str | None = None          # the expression its listing check refuses (exit 1)
    impacts: tuple[Impact, ...] = ()     # the k3s calls it breaks
    versions: tuple[str, ...] = ()       # the iptables versions it holds for
    kind: str = ""                       # a misread's kind
    after_sync: str | None = None        # a misread rule after kube-router's next restore
    back: str | None = None              # what iptables writes back for the culprit test
    written_back: str | None = None      # the whole rule as iptables-save prints it (-A …)
    culprit: int = -1                    # a misread's culprit expression
    uncertain: bool = False              # the binary decides by reading uninitialised memory
    variants: tuple["Finding", ...] = ()  # each version's own, where versions differ

    def for_version(self, version: str) -> "Finding | None":
        if version not in self.versions:
            return None
        own = next((v for v in self.variants if version in v.versions), None)
        if own is None:
            return self
        # a misread's variant says what its own version writes back
        return replace(own, impacts=self.impacts,
                       after_sync=own.after_sync if own.written_back else self.after_sync)

    @property
    def blocking(self) -> bool:
        """It breaks a call k3s dies on."""
        return any(i.fatal for i in self.impacts)

    @property
    def key(self) -> tuple[str, str, str, int]:
        r = self.rule
        return r.family, r.table, r.chain, r.handle


@dataclass(frozen=True)
class CompatReport:
    managed_tables: tuple[TableRef, ...] = ()
    findings: tuple[Finding, ...] = ()             # rules iptables-nft fails on
    unlistable_chains: tuple[ChainRef, ...] = ()   # chains `iptables -S CHAIN` refuses
    misread: tuple[Finding, ...] = ()              # rules it reads without error, but wrongly
    dropped_chains: tuple[DroppedChain, ...] = ()  # base chains it never sees
    unnamed_tables: tuple[TableRef, ...] = ()      # iptables-managed, but no iptables names them
    versions: tuple[str, ...] = ()                 # the readers this report is for
    # where kube-router's `-m comment --comment "kube-router netpol - …" -j KUBE-ROUTER-X`
    # jump sits: (family, chain) -> position
    kube_router_jumps: dict = field(default_factory=dict, compare=False)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def blocking(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.blocking)

    def for_version(self, version: str) -> "CompatReport":
        """The report of one reader (findings that hold for it)."""
        if self.versions == (version,):
            return self
        keep = lambda fs: tuple(x for x in (f.for_version(version) for f in fs) if x)  # noqa: E731
        findings = keep(self.findings)
        chains = tuple(dict.fromkeys(ChainRef(f.rule.family, f.rule.table, f.rule.chain)
                                     for f in findings))
        return replace(self, findings=findings, unlistable_chains=chains,
                       misread=keep(self.misread), versions=(version,))

    def without(self, rules: "Iterable[Rule]") -> "CompatReport":
        """The report as it reads once these rules were re-encoded (repaired)."""
        gone = {(r.family, r.table, r.chain, r.handle) for r in rules}
        if not gone:
            return self
        keep = tuple(f for f in self.findings if f.key not in gone)
        chains = tuple(dict.fromkeys(ChainRef(f.rule.family, f.rule.table, f.rule.chain)
                                     for f in keep))
        misread = tuple(f for f in self.misread if f.key not in gone)
        return replace(self, findings=keep, unlistable_chains=chains, misread=misread)

    @property
    def unsaveable_tables(self) -> tuple[TableRef, ...]:
        """Tables iptables-save leaves out (or aborts on)."""
        seen = dict.fromkeys(TableRef(c.family, c.table) for c in self.unlistable_chains)
        return tuple(seen)

    def _findings_in(self, family: str, table: str, chain: str | None = None) -> list[Finding]:
        return [f for f in self.findings if (f.rule.family, f.rule.table) == (family, table)
                and chain in (None, f.rule.chain)]

    def listing_exit(self, family: str, table: str, chain: str | None = None) -> int | None:
        """The exit code `iptables -t TABLE -S [CHAIN]` gives: 0; 1 when its expression
        check refuses the chain (it runs first); 3 when a rule fails to parse (or
        what a crash or an internal "BUG" gives); None when a rule is unreadable to us."""
        found = self._findings_in(family, table, chain)
        if any(f.unlisted for f in found):
            return 1
        failing = next((f for f in sorted(found, key=lambda f: (f.rule.chain, f.rule.position))
                        if f.iptables_error), None) if chain is None else \
            next((f for f in found if f.iptables_error), None)
        if failing:  # the first rule that fails to parse ends the listing
            return _FATAL.get(failing.iptables_error, 3)
        return None if found else 0

    def save_outcome(self, family: str, table: str) -> str | None:
        """What iptables-save does with the table: "saved"; "left out" (a "# Table
        `T' is incompatible" line instead, exit 0); "aborted" (a rule fails to
        parse, exit 3); None when we cannot tell."""
        found = self._findings_in(family, table)
        if any(f.unlisted for f in found):
            return "left out"
        if any(f.iptables_error for f in found):
            return "aborted"
        return None if found else "saved"

    def check_blocker(self, family: str, table: str, chain: str,
                      position: int | None = None) -> Finding | None:
        """The first rule before `position` (or anywhere, if None) on which
        `iptables -C`/`-D` fails while walking the chain."""
        found = [f for f in self.findings if BREAKS_CHECK in f.breaks
                 and (f.rule.family, f.rule.table, f.rule.chain) == (family, table, chain)
                 and (position is None or f.rule.position < position)]
        return min(found, key=lambda f: f.rule.position, default=None)


# --- which tables and chains --------------------------------------------------------

def is_managed(ref: TableRef, rules: tuple[Rule, ...] | list[Rule]) -> bool:
    """iptables-nft's table: one of its built-in table names, or one holding an xt
    match/target (the signal nft's "managed by iptables-nft" warning uses)."""
    if ref.name in IPTABLES_TABLES.get(ref.family, ()):
        return True
    return any(e.name in XT_EXPRESSIONS for r in rules for e in r.exprs)


def managed_tables(snapshot: Snapshot) -> list[TableRef]:
    refs = sorted(snapshot.tables, key=lambda r: (r.family, r.name))
    return [ref for ref in refs if ref.family in IPTABLES_TABLES
            and is_managed(ref, snapshot.tables[ref].rules)]


def dropped_chains(table: Table) -> dict[str, str]:
    """Base chains nft_cache_add_base_chain refuses: chain name -> why. A second base
    chain on a built-in hook is refused too (-EEXIST)."""
    builtin = BUILTIN_CHAINS.get((table.family, table.name))
    if builtin is None:
        return {}
    out: dict[str, str] = {}
    taken: set[int] = set()
    for c in table.chains:
        if c.hook is None:
            continue
        want = next(((name, spec) for name, spec in builtin.items() if spec[0] == c.hook), None)
        if want is None:
            out[c.name] = f"hook {C.HOOK_NAMES.get(c.hook, c.hook)} is not one of the table's"
        elif (c.name, c.priority, c.type) != (want[0], want[1][1], want[1][2]):
            out[c.name] = (f"base chain {c.type} hook {C.HOOK_NAMES.get(c.hook, c.hook)} priority "
                           f"{c.priority}: iptables' own is {want[0]}, {want[1][2]} priority "
                           f"{want[1][1]}")
        elif c.hook in taken:
            out[c.name] = "a second base chain on the same hook"
        else:
            taken.add(c.hook)
    return out


def _set_key_lengths(table: Table) -> dict[str, int]:
    """name -> NFTA_SET_KEY_LEN of the table's sets (ebtables' among needs it). The
    snapshot keeps a set's attributes back to back, without their padding."""
    out = {}
    for name, data in table.sets:
        for kind, start, end in iter_packed(data):
            if kind == C.NFTA_SET_KEY_LEN and end - start == 4:
                out[name] = int.from_bytes(data[start:end], "big")
                break
    return out


# --- findings ---------------------------------------------------------------------------

def _findings(rule: Rule, verdict: RuleVerdict) -> tuple[Finding | None, Finding | None]:
    """(the rule's finding if iptables-nft fails on it, its misread finding), without
    versions and consequences."""
    if verdict.clean:
        return None, None  # the common case: no need to look for an equivalent
    repairable = iptables_equivalent(rule) is not None
    everything = (BREAKS_CHECK, BREAKS_LIST, BREAKS_SAVE)
    if verdict.unreadable:
        i, why = verdict.unreadable
        name = rule.exprs[i].name or "unnamed"
        return Finding(rule, f"expression {i} ({name}): unreadable attribute data ({why}); "
                             f"cannot tell what iptables-nft makes of it",
                       False, everything), None
    unlisted = verdict.unlisted[0][1] if verdict.unlisted else None
    misread = None
    if verdict.misread:
        # what the sync does to it: a restore that is refused outweighs any misreading
        m = next((m for m in verdict.misread if m.kind == "refused"), verdict.misread[0])
        misread = Finding(rule, f"{describe(rule.exprs[m.index])}: {m.what}", repairable, kind=m.kind,
                          back=written_back(rule, m.kind, m.index), culprit=m.index)
    if verdict.errors:
        # A crash or an internal "BUG" ends the program before the rule's other errors.
        i, message = next((e for e in verdict.errors if e[1] in _FATAL), verdict.errors[0])
        how = "may fail to parse it (it reads uninitialised memory: some runs fail)" \
            if verdict.uncertain else "cannot parse it"
        return Finding(rule, f"{describe(rule.exprs[i])}: iptables-nft {how} ({message})",
                       repairable, everything, message, unlisted,
                       uncertain=verdict.uncertain), None
    if verdict.crash and not unlisted:  # the listing check runs first: exit 1, no crash
        i, message = verdict.crash
        return Finding(rule, f"{describe(rule.exprs[i])}: iptables-nft reads it, but listing "
                             f"it crashes (-S/-L and iptables-save die; -C still works): "
                             f"{message}", repairable, (BREAKS_LIST, BREAKS_SAVE), message,
                       None), misread
    if unlisted:
        return Finding(rule, f"{unlisted}: iptables-nft refuses to list a chain holding it "
                             f"(-S/-L fail, iptables-save skips the table; -C still works)",
                       repairable, (BREAKS_LIST, BREAKS_SAVE), None, unlisted), misread
    return None, misread


_PORT_NAMES = {0: "--sport", 2: "--dport"}


def _compared(rule: Rule, index: int) -> dict | None:
    """The cmp reading what expression `index` loaded."""
    try:
        dreg = _normalise(rule.exprs[index].fields.get("dreg", -1))
        for e in rule.exprs[index + 1:]:
            f = e.fields
            if e.name == "cmp" and _normalise(f.get("sreg", -2)) == dreg:
                return f
    except (ValueError, TypeError, KeyError, IndexError):
        pass
    return None


def written_back(rule: Rule, kind: str, index: int, version: str | None = None) -> str | None:
    """The iptables option a misread test comes back as, from the rule's own values
    (not memoised: misread rules are few). None where it takes the whole rule to say."""
    try:
        expr = rule.exprs[index]
        load = expr.fields
    except (ValueError, IndexError):
        return None
    if expr.name != "payload":
        return None
    cmp = _compared(rule, index)
    data = (cmp or {}).get("data") or b""
    base, offset = load.get("base"), load.get("offset")
    icmp6 = rule.family == "ip6"
    option = "--icmpv6-type" if icmp6 else "--icmp-type"
    if kind == "icmp-any" or (kind == "icmp" and offset == 1):
        # a code alone: 1.8.9/1.8.10 print `any`, 1.8.11 on `255/CODE` (libxt_icmp's
        # print of type 255 with a code range); both match every ICMP type
        shown = profile_for(version) if version else None
        if offset == 1 and data and shown is not None and shown.icmp_any_code_shown:
            return f"{option} 255/{data[0]}"
        return f"{option} any"
    if not data:
        return None
    if kind == "icmp" and base == _TRANSPORT:
        return f"{option} {data[0]}/{data[1]}" if len(data) == 2 else f"{option} {data[0]}"
    if kind == "mask" and base == _TRANSPORT and offset in _PORT_NAMES and len(data) == 2 \
            and _is_port_rule(rule):
        return f"{'! ' if (cmp or {}).get('op') == C.CMP_NEQ else ''}{_PORT_NAMES[offset]} " \
               f"{int.from_bytes(data, 'big')}"
    neq = "! " if (cmp or {}).get("op") == C.CMP_NEQ else ""
    if kind in ("mask", "header") and base == _NETWORK and not icmp6 and offset == 8:
        # libnftnl's nftnl_expr_get_u8 gives 0 for data that is not one byte
        return f"-m ttl {neq}--ttl-eq {data[0] if len(data) == 1 else 0}"
    if kind == "nexthdr":
        return f"-m hl --hl-eq {data[0]}"
    return None


def _is_port_rule(rule: Rule) -> bool:
    """The rule's protocol test says tcp or udp (ports, not ICMP, at offset 0)."""
    for e in rule.exprs:
        try:
            f = e.fields
        except ValueError:
            continue
        if e.name == "cmp" and (f.get("data") or b"\0")[:1] in (bytes([_TCP]), bytes([_UDP])):
            return True
    return False


def judge_rule(rule: Rule, profile: Profile = OLDEST, setup: Setup = Setup()
               ) -> tuple[Finding | None, Finding | None]:
    """(the rule's finding if iptables-nft fails on it, its misread finding), judged
    alone: what it breaks, as if it were in a table of its own."""
    bad, wrong = _findings(rule, read_rule(rule, profile))
    if wrong:
        wrong = replace(wrong, back=written_back(rule, wrong.kind, wrong.culprit, profile.version),
                        written_back=saved_line(rule, profile))
    return _complete(bad, (profile.version,), setup), _complete(wrong, (profile.version,), setup)


def _by_line(rule: Rule, wrong: Finding, versions: list[str]) -> list[Finding]:
    """A misread finding per distinct line the versions' iptables-save print for it."""
    lines: dict[str | None, list[str]] = {}
    for v in versions:
        lines.setdefault(saved_line(rule, BY_VERSION[v]), []).append(v)
    return [replace(wrong, versions=tuple(vs), written_back=line,
                    back=written_back(rule, wrong.kind, wrong.culprit, vs[0]))
            for line, vs in lines.items()]


def _merge(found: list[Finding]) -> Finding:
    """One finding per rule: the first version's, holding for every version that has
    one; where versions say it differently, each version's own is kept (variants)."""
    if len(found) == 1:
        return found[0]
    first = found[0]
    said = lambda f: f.iptables_error or f.unlisted or f.kind  # noqa: E731
    others = "; ".join(f"iptables {', '.join(f.versions)}: {said(f)}"
                       for f in found[1:] if said(f) != said(first))
    breaks = tuple(b for b in (BREAKS_CHECK, BREAKS_LIST, BREAKS_SAVE)
                   if any(b in f.breaks for f in found))
    return replace(first, reason=f"{first.reason} ({others})" if others else first.reason,
                   breaks=breaks,
                   versions=tuple(v for f in found for v in f.versions),
                   uncertain=any(f.uncertain for f in found), variants=tuple(found))


def _complete(f: Finding | None, versions: tuple[str, ...] | None, setup: Setup,
              ip6_kube_router: bool = False, sync_blocked: bool = False) -> Finding | None:
    if f is None:
        return None
    versions = f.versions if versions is None else versions
    r = f.rule
    if f.breaks:
        found = impacts(r.family, r.table, r.chain, r.position, f.breaks, setup, ip6_kube_router)
        sync = next((i for i in found if i.effect == SYNC_EFFECT), None)
        after = None
        if sync is not None:
            after = (f"after kube-router's next policy sync: every sync fails: `{sync.command}` "
                     f"fails on this rule, the sync is aborted (logged), network policies are "
                     f"not applied")
        return replace(f, versions=versions, impacts=found, after_sync=after)
    restored = setup.network_policy and r.table == "filter" and (
        r.family == "ip" or (r.family == "ip6" and (setup.dual_stack or ip6_kube_router)))
    after = None
    if restored:
        after = f"after kube-router's next policy sync: {after_sync(f.kind)}"
        if f.written_back and f.kind == "refused":
            after += f"; the line it refuses: `{f.written_back}`"
        elif f.written_back:
            after += f"; it writes back `{f.written_back}`"
        elif f.back:
            after += f"; the test comes back as `{f.back}`"
        if sync_blocked:
            after += " (not while the table holds rules iptables cannot read: the sync aborts)"
    variants = tuple(_complete(v, None, setup, ip6_kube_router, sync_blocked)
                     for v in f.variants)
    return replace(f, versions=versions, after_sync=after, variants=variants)


def _ip6_kube_router(snapshot: Snapshot) -> bool:
    """kube-router's chains in ip6 filter: the node is dual-stack."""
    table = snapshot.tables.get(TableRef("ip6", "filter"))
    own = set(KUBE_ROUTER_JUMPS.values())
    return table is not None and any(c.name in own for c in table.chains)


def kube_router_jump(rule: Rule) -> str | None:
    """The builtin chain whose kube-router jump this rule is, as `iptables -C` compares
    it (nft_rule_cmp: the comment match's data and the jump; a counter does not count)."""
    target = KUBE_ROUTER_JUMPS.get(rule.chain)
    if target is None or rule.table != "filter" or rule.family not in ("ip", "ip6"):
        return None
    comment = jump_spec(rule.chain)[3].encode()
    if rule.comment_tlv() is not None:
        return None  # an nft comment: iptables adds it as a second comment match
    try:
        exprs = [e for e in rule.exprs if e.name != "counter"]
        if len(exprs) != 2 or [e.name for e in exprs] != ["match", "immediate"]:
            return None
        m, imm = exprs[0].fields, exprs[1].fields
    except ValueError:
        return None
    info = m.get("info") or b""
    if m.get("name") != "comment" or info.split(b"\0", 1)[0] != comment or info[len(comment):].strip(b"\0"):
        return None
    return rule.chain if imm.get("data") == ("jump", target) else None


def analyse(snapshot: Snapshot, profiles: Iterable[Profile] = PROFILES,
            setup: Setup = Setup()) -> CompatReport:
    """Every managed table read by each of `profiles`; a finding holds for the versions
    it lists (Finding.versions)."""
    profiles = tuple(profiles) or PROFILES
    versions = tuple(p.version for p in profiles)
    ip6_kr = _ip6_kube_router(snapshot)
    managed = managed_tables(snapshot)
    findings: list[Finding] = []
    misread: list[Finding] = []
    dropped: list[DroppedChain] = []
    unnamed: list[TableRef] = []
    jumps: dict[tuple[str, str], int] = {}
    sync_blocked: set[TableRef] = set()
    for ref in managed:
        table = snapshot.tables[ref]
        named = [p for p in profiles if ref.name in tables_named(ref.family, p)]
        if len(named) < len(profiles):
            unnamed.append(ref)
        if not named:
            continue  # no command of these versions reads it
        gone = dropped_chains(table)
        for name, why in gone.items():
            dropped.append(DroppedChain(ref.family, ref.name, name, why,
                                        sum(1 for r in table.rules if r.chain == name)))
        sets = _set_key_lengths(table) if ref.family == "bridge" else None
        named = tuple(named)
        for rule in table.rules:
            if rule.chain in gone:
                continue  # never in iptables' cache: no command reads it
            if rule.chain in KUBE_ROUTER_JUMPS and ref.name == "filter" and \
                    (ref.family, rule.chain) not in jumps and kube_router_jump(rule):
                jumps[(ref.family, rule.chain)] = rule.position
            vs = verdicts(rule, named, sets)
            if not vs:
                continue
            groups: dict[RuleVerdict, list[str]] = {}
            for p, v in zip(named, vs):
                if not v.clean:
                    groups.setdefault(v, []).append(p.version)
            bads, wrongs = [], []
            for v, vers in groups.items():
                bad, wrong = _findings(rule, v)
                if bad:
                    bads.append(replace(bad, versions=tuple(vers)))
                if wrong:
                    # how it is shown can depend on the version (`255/3` from 1.8.10)
                    wrongs += _by_line(rule, wrong, vers)
            if bads:
                findings.append(_complete(_merge(bads), None, setup, ip6_kr))
                sync_blocked.add(ref)
            if wrongs:
                misread.append(_merge(wrongs))
    misread = [_complete(f, None, setup, ip6_kr,
                         TableRef(f.rule.family, f.rule.table) in sync_blocked)
               for f in misread]
    chains = tuple(dict.fromkeys(ChainRef(f.rule.family, f.rule.table, f.rule.chain)
                                 for f in findings))
    return CompatReport(tuple(managed), tuple(findings), chains, tuple(misread), tuple(dropped),
                        tuple(unnamed), versions, jumps)
