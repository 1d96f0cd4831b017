"""What Netbird leaves in iptables' tables, and why. Pure.

Netbird (client/firewall/nftables) inserts its "allow wt0" rules into `ip filter`
through the `iptables` binary when one is on its PATH, untagged; when none is (or,
since v0.71, when the insert fails) it writes them natively, tagged with raw
userdata. So a tag means Netbird fell back. kube-router's restore without
--noflush re-writes every rule of `ip filter` without its userdata, Netbird's next
firewall init finds no tag and adds its rule again: untagged copies pile up.
"""
from __future__ import annotations

from dataclasses import dataclass

from .model import Rule, Snapshot, TableRef

# Netbird's tags, stored as raw NFTA_RULE_USERDATA bytes on its native filter rules
# (client/firewall/nftables): the one place fwgate spells them.
TAG_FORWARD_IIF = b"frwacceptiif"
TAG_FORWARD_OIF = b"frwacceptoif"
TAG_INPUT = b"inputaccept"
TAGS = (TAG_FORWARD_IIF, TAG_FORWARD_OIF, TAG_INPUT)
FILTER_TABLES = (TableRef("ip", "filter"), TableRef("ip6", "filter"))
_CHAINS = ("FORWARD", "INPUT")


def is_native_netbird_rule(rule: Rule) -> bool:
    """A rule Netbird wrote itself, over netlink: its raw userdata tag says so."""
    return rule.userdata is not None and bytes(rule.userdata) in TAGS and \
        TableRef(rule.family, rule.table) in FILTER_TABLES


def _accept_shape(rule: Rule, ifaces: frozenset[str]) -> tuple | None:
    """(family, chain, direction, iface, stateful) of a rule shaped like one of Netbird's
    accept rules, as Netbird writes it or as iptables re-wrote it, else None."""
    if TableRef(rule.family, rule.table) not in FILTER_TABLES or rule.chain not in _CHAINS:
        return None
    try:
        names = rule.expr_names
        if not names or names[-1] != "immediate" or \
                rule.exprs[-1].fields.get("data", ("",))[0] != "accept":
            return None
        matches = rule.interface_matches()
    except ValueError:
        return None
    found = [(key, name) for key in ("iifname", "oifname") for name in matches[key]
             if name in ifaces]
    if len(found) != 1 or sum(len(v) for v in matches.values()) != 1:
        return None
    stateful = "ct" in names or any(
        e.name == "match" and e.fields.get("name") in ("conntrack", "state") for e in rule.exprs)
    allowed = {"meta", "cmp", "ct", "bitwise", "counter", "immediate", "match"}
    if not set(names) <= allowed:
        return None
    return rule.family, rule.chain, found[0][0], found[0][1], stateful


@dataclass(frozen=True)
class NetbirdRules:
    native: tuple[Rule, ...]       # tagged: Netbird fell back to writing them itself
    untagged_copies: int           # accept rules of Netbird's shapes beyond the one it needs
    dead: tuple[Rule, ...] = ()    # untagged copies no packet reaches: safe to delete


def _identity(rule: Rule) -> tuple:
    """What a rule does, without its counter's values (they change with traffic)."""
    return tuple((e.name, b"" if e.name == "counter" else e.raw) for e in rule.exprs)


def _shaped(snapshot: Snapshot, ifaces: frozenset[str]) -> list[tuple[Rule, tuple]]:
    """The rules of iptables' filter tables shaped like Netbird's accept rules, with their
    shape, each decoded once."""
    found = []
    for ref in FILTER_TABLES:
        table = snapshot.table(ref)
        for rule in table.rules if table else ():
            shape = _accept_shape(rule, ifaces)
            if shape is not None:
                found.append((rule, shape))
    return found


def _dead(shaped: list[tuple[Rule, tuple]]) -> tuple[Rule, ...]:
    seen: set[tuple] = set()
    dead: list[Rule] = []
    for rule, _ in sorted(shaped, key=lambda s: (s[0].family, s[0].chain, s[0].position)):
        key = (rule.family, rule.chain, _identity(rule))
        if key in seen and not is_native_netbird_rule(rule):
            dead.append(rule)
        seen.add(key)
    return tuple(dead)


def dead_copies(snapshot: Snapshot, ifaces: frozenset[str] = frozenset({"wt0"})) -> tuple[Rule, ...]:
    """Untagged copies of Netbird's accept rules that follow an identical rule in the
    same chain. Their matches are stateless (interface, conntrack state) and their
    verdict ends the chain, so every packet they match was accepted by the first one:
    never reached, deleting them changes no packet's fate. Left: a tagged rule (Netbird
    deletes it by its tag), and a copy with no identical rule before it (it may be the
    one that accepts)."""
    return _dead(_shaped(snapshot, ifaces))


def survey(snapshot: Snapshot, ifaces: frozenset[str] = frozenset({"wt0"})) -> NetbirdRules:
    shaped = _shaped(snapshot, ifaces)
    native = [rule for rule, _ in shaped if is_native_netbird_rule(rule)]
    shapes: dict[tuple, list[bool]] = {}
    for rule, shape in shaped:
        shapes.setdefault(shape, []).append(is_native_netbird_rule(rule))
    extra = 0
    for tags in shapes.values():
        untagged = tags.count(False)
        # Without a tagged one, one untagged rule is Netbird's own (written through iptables).
        extra += untagged if any(tags) else max(0, untagged - 1)
    return NetbirdRules(tuple(native), extra, _dead(shaped))


@dataclass(frozen=True)
class IptablesOnPath:
    path: str
    mode: str | None   # "nf_tables", "legacy", or None when it did not answer --version


@dataclass(frozen=True)
class NetbirdEnvironment:
    """What systemd says about netbird.service's PATH, and the iptables on it."""

    unit: str
    path: str | None              # None: systemd could not be asked
    path_source: str              # "Environment= of netbird.service", "systemd's default", ...
    found: tuple[IptablesOnPath, ...] = ()
    error: str | None = None
    installed: bool = True        # systemd knows the unit (LoadState is not not-found)
    firewall_disabled: bool = False  # NB_DISABLE_FIREWALL=true: Netbird writes no rules


@dataclass(frozen=True)
class Prevention:
    """Whether Netbird can write its native rule at all: prevention is the only zero,
    repair (however fast) races kube-router."""

    in_force: bool
    state: str   # iptables | firewall-disabled | no-netbird | no-iptables | legacy-iptables | unknown
    why: str

    def json(self) -> dict:
        return {"in_force": self.in_force, "state": self.state, "why": self.why}


def prevention(env: NetbirdEnvironment) -> Prevention:
    """Prevention is in force when Netbird finds an nf_tables iptables first on its PATH
    (it writes its ip filter rules through it, in a form iptables reads), when its
    firewall is off, or when there is no Netbird."""
    unit = env.unit
    if not env.installed:
        return Prevention(True, "no-netbird", f"{unit} is not installed: nothing writes "
                                              f"Netbird's rules")
    if env.firewall_disabled:
        return Prevention(True, "firewall-disabled", f"{unit} runs with NB_DISABLE_FIREWALL=true: "
                                                     f"Netbird writes no rules")
    if env.path is None:
        return Prevention(False, "unknown", f"cannot tell what {unit} finds on its PATH "
                                            f"({env.error})")
    exposed = ("Netbird writes its native ct rule at every firewall re-init and only "
               "repair, racing kube-router, keeps k3s alive")
    if not env.found:
        return Prevention(False, "no-iptables", f"no iptables on {unit}'s PATH ({env.path}): "
                                                f"{exposed}")
    first = env.found[0]
    if first.mode != "nf_tables":
        return Prevention(False, "legacy-iptables" if first.mode == "legacy" else "unknown",
                          f"the iptables first on {unit}'s PATH ({first.path}) runs in "
                          f"{first.mode or 'an unknown'} mode: {exposed}")
    return Prevention(True, "iptables", f"{unit} finds an nf_tables iptables on its PATH "
                                        f"({first.path}): it writes its rules through it, "
                                        f"never natively")


def explain_fallback(env: NetbirdEnvironment) -> tuple[str, ...]:
    """Why Netbird wrote native rules, and how to keep it from doing so, in words."""
    head = "Netbird wrote its ip filter accept rules natively (iptables-nft cannot read " \
           "its ct state rule; fwgate re-encodes it)."
    fix = (f"Prevent it: install Debian's iptables package (nf_tables mode), or give "
           f"{env.unit} a PATH holding an nf_tables-mode iptables (systemctl edit {env.unit}: "
           f"[Service] Environment=PATH=...), then restart {env.unit}.")
    if env.path is None:
        return (head, f"fwgate could not read {env.unit}'s environment ({env.error}); Netbird "
                      f"does this when it finds no iptables on its PATH.", fix)
    if not env.found:
        return (head, f"Cause: no iptables on {env.unit}'s PATH ({env.path}, "
                      f"{env.path_source}); k3s's own copy under /var/lib/rancher is not on it.",
                fix)
    nft = [f for f in env.found if f.mode == "nf_tables"]
    if not nft:
        first = env.found[0]
        return (head, f"Cause: the iptables on {env.unit}'s PATH ({first.path}) runs in "
                      f"{first.mode or 'an unknown'} mode, so Netbird's inserts fail and it "
                      f"falls back (Netbird 0.71 and later).", fix)
    return (head, f"{env.unit}'s PATH now holds an nf_tables iptables ({nft[0].path}); its "
                  f"native rules predate that. Restart {env.unit} to have them written through "
                  f"iptables.")
