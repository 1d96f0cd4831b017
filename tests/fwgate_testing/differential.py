"""The reader model against the real iptables binaries, on generated rules.

A grammar of nft rule fragments (Hypothesis strategies: payload, meta, ct, exthdr, fib,
socket, rt, numgen/hash matches with ==, !=, <, >, ranges, masks, sets and maps,
repeated tests of one field; statements; verdicts) composed into one rule per case,
placed per family (ip, ip6), table (filter, nat, mangle, raw) and chain position (above
or below kube-router's jump in filter INPUT/FORWARD/OUTPUT, the end of any other base
chain). `judge(case)` runs one case:

1. A fresh namespace holds kube-router's state (its three chains and jumps, written by
   iptables-restore) in the case's family, a user chain GEN for jump/goto in the case's
   table, and the case's rule written by `nft -f` next to them.
2. Each version's binaries (tests/fwgate_testing/iptables_versions.py: 1.8.9 system, 1.8.11, 1.8.13)
   run kube-router's fatal calls (crosscheck.calls_for: `-S KUBE-ROUTER-X 1`, `-C X
   <jump>`, `-S X` for INPUT, FORWARD, OUTPUT), `-S CHAIN` of the case's chain and
   `iptables-save -t TABLE`; then the round trip every kube-router sync performs:
   the saved text restored with `iptables-restore -T TABLE` into a second fresh
   namespace, and both tables listed by `nft -j` and compared rule by rule,
   expression by expression, after normalise() (each normalisation says why it keeps
   the meaning).
3. Ground truth per version: `blocking` (a call k3s dies on fails), `broken` (only
   calls that are logged and retried fail: the save, `-S` of another chain), `sync
   fails` (iptables-restore refuses what iptables-save wrote), `dropped` (the rule is
   gone after the round trip), `misread` (it comes back as another rule), `ok`.
4. The model's verdict per version (reader.analyse with that version's profile alone,
   as with `compat.iptables: none`), in the same words, and its predicted exit code
   for every call (crosscheck.predict). A case agrees when both match.
"""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field

from hypothesis import strategies as st

from fwgate.adapters.netns import call_in, throwaway
from fwgate.adapters.nfsock import NfSocket
from fwgate.adapters.nft import snapshot
from fwgate.compat.crosscheck import Call, calls_for, predict
from fwgate.compat.impact import KUBE_ROUTER_JUMPS, jump_spec
from fwgate.compat.profiles import profile_for
from fwgate.compat.reader import BUILTIN_CHAINS, CompatReport, analyse
from fwgate.compat.roundtrip import listing, short
from fwgate.model import TableRef
from .iptables_versions import builds

FOREIGN = "NB"   # a base chain of another priority than iptables' own, as Netbird makes
CATEGORIES = ("blocking", "broken", "sync fails", "dropped", "misread", "ok")
CHAINS = {"filter": ("INPUT", "FORWARD", "OUTPUT"),
          "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
          "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
          "raw": ("PREROUTING", "OUTPUT")}


@dataclass(frozen=True)
class Case:
    family: str      # ip | ip6
    table: str       # filter | nat | mangle | raw
    chain: str       # a built-in chain of the table
    position: str    # above | below kube-router's jump (filter), end (other tables)
    rule: str        # nft rule text

    @property
    def id(self) -> str:
        return f"{self.family} {self.table} {self.chain} {self.position}: {self.rule}"

    def nft_script(self) -> str:
        verb = "insert" if self.position == "above" else "add"
        head = ""
        if self.chain == FOREIGN:  # a base chain iptables does not know (nft-cache.c drops it)
            head = f"add chain {self.family} {self.table} {FOREIGN} " \
                   f"{{ type filter hook forward priority 10; }}\n"
        return head + f"{verb} rule {self.family} {self.table} {self.chain} {self.rule}\n"


# --- the grammar ------------------------------------------------------------------------

def _num(lo: int, hi: int) -> st.SearchStrategy[str]:
    return st.integers(lo, hi).map(str)


_CMP = st.sampled_from(["", "", "!= ", "< ", "> ", "<= ", ">= ", "== "])
_EQ_NE = st.sampled_from(["", "!= ", "== "])


@st.composite
def _value_test(draw, left: str, value: st.SearchStrategy[str], *, ordered: bool = True,
                ranges: st.SearchStrategy[str] | None = None,
                sets: bool = True, mask: str | None = None) -> str:
    """`left OP value`, a range, a set or `left & MASK == value`."""
    forms = ["op"] + (["range"] if ranges is not None else []) + (["set"] if sets else []) \
        + (["mask"] if mask else [])
    form = draw(st.sampled_from(forms))
    if form == "range":
        return f"{left} {draw(_EQ_NE)}{draw(ranges)}"
    if form == "set":
        items = draw(st.lists(value, min_size=1, max_size=3, unique=True))
        return f"{left} {draw(st.sampled_from(['', '!= ']))}{{ {', '.join(items)} }}"
    if form == "mask":
        return f"{left} & {mask} {draw(st.sampled_from(['==', '!=']))} {draw(value)}"
    op = draw(_CMP if ordered else _EQ_NE)
    return f"{left} {op}{draw(value)}"


_IP4 = st.sampled_from(["10.0.0.1", "10.0.0.9", "192.168.1.1", "10.0.0.0/8", "10.1.0.0/16"])
_IP6 = st.sampled_from(["::1", "fd00::1", "fd00::/64", "2001:db8::9"])
_PORT = st.sampled_from(["22", "53", "80", "443", "1024", "0", "65535"])
_TTL = st.sampled_from(["0", "1", "5", "64", "255"])
_ICMP_TYPE = st.sampled_from(["echo-request", "echo-reply", "destination-unreachable",
                              "0", "3", "8", "11", "255"])
_ICMP6_TYPE = st.sampled_from(["echo-request", "echo-reply", "nd-neighbor-solicit",
                               "packet-too-big", "1", "128", "255"])
_CODE = st.sampled_from(["0", "1", "3", "255"])
_FLAG_SETS = st.sampled_from(["syn", "ack", "fin", "rst", "syn | ack", "fin | syn | rst | ack",
                              "ecn", "cwr", "syn | ecn", "0x12"])  # no 0: a tautology
_TCP_FLAG_TESTS = st.one_of(
    st.builds(lambda f: f"tcp flags {f}", st.sampled_from(["syn", "ack", "syn,ack"])),
    st.builds(lambda op, f: f"tcp flags {op} {f}", st.sampled_from(["==", "!="]),
              st.sampled_from(["syn", "ack", "0x0", "0x2", "0x12"])),
    st.builds(lambda m, op, f: f"tcp flags & ({m}) {op} {f}", _FLAG_SETS,
              st.sampled_from(["==", "!="]), st.sampled_from(["syn", "ack", "0x0", "ecn"])),
    st.builds(lambda f: f"tcp flags {{ {f} }}", st.sampled_from(["syn, ack", "syn", "fin, rst"])),
    st.builds(lambda v: f"meta l4proto tcp @th,104,8 {v}", st.sampled_from(["0x2", "0x0", "0x12"])),
    st.builds(lambda m, v: f"meta l4proto tcp @th,104,8 & {m} == {v}",
              st.sampled_from(["0x12", "0x3f", "0xc0", "0x2"]), st.sampled_from(["0x2", "0x0"])),
)


def _addr(family: str, field_: str) -> st.SearchStrategy[str]:
    left = f"{family} {field_}"
    if family == "ip":
        return _value_test(left, _IP4, ranges=st.just("10.0.0.1-10.0.0.9"),
                           mask="255.255.0.0")
    return _value_test(left, _IP6, ranges=st.just("fd00::1-fd00::9"), mask="ffff:ffff::")


def _network(family: str) -> st.SearchStrategy[str]:
    if family == "ip":
        return st.one_of(
            _addr("ip", "saddr"), _addr("ip", "daddr"),
            _value_test("ip protocol", st.sampled_from(["tcp", "udp", "icmp", "6", "47"]),
                        ordered=False),
            _value_test("ip ttl", _TTL, ranges=st.just("1-10"), mask="0xf0"),
            _value_test("ip length", _num(0, 1500), ranges=st.just("100-200"), sets=False),
            _value_test("ip dscp", st.sampled_from(["cs1", "ef", "0"]), ordered=False),
            _value_test("ip id", _num(0, 65535), sets=False),
            st.sampled_from(["ip frag-off & 0x1fff != 0", "ip frag-off & 0x1fff == 0",
                             "ip frag-off & 0x4000 != 0", "ip version 4", "ip hdrlength 5",
                             "ip ecn ce"]),
        )
    return st.one_of(
        _addr("ip6", "saddr"), _addr("ip6", "daddr"),
        _value_test("ip6 nexthdr", st.sampled_from(["tcp", "udp", "ipv6-icmp", "6"]),
                    ordered=False),
        _value_test("ip6 hoplimit", _TTL, ranges=st.just("1-10")),
        _value_test("ip6 flowlabel", _num(0, 100), sets=False),
        _value_test("ip6 length", _num(0, 1500), sets=False),
        st.sampled_from(["ip6 version 6", "ip6 dscp cs1"]),
    )


def _transport(family: str) -> st.SearchStrategy[str]:
    icmp, types = ("icmp", _ICMP_TYPE) if family == "ip" else ("icmpv6", _ICMP6_TYPE)
    return st.one_of(
        _value_test("tcp dport", _PORT, ranges=st.just("1000-2000"), mask="0xff00"),
        _value_test("tcp sport", _PORT, ranges=st.just("1024-65535"), mask="0xff00"),
        _value_test("udp dport", _PORT, ranges=st.just("1000-2000"), mask="0xff00"),
        _value_test("udp sport", _PORT, ranges=st.just("1024-65535")),
        _TCP_FLAG_TESTS,
        _value_test(f"{icmp} type", types, ranges=st.just("0-10"), mask="0xf0"),
        _value_test(f"{icmp} code", _CODE, ranges=st.just("0-3")),
        st.builds(lambda t, op, c: f"{icmp} type {t} {icmp} code {op}{c}", types, _CMP, _CODE),
        _value_test(f"{icmp} id", _num(0, 9), sets=False, ordered=False),
        st.sampled_from(["tcp sequence 1", "tcp window 1024", "tcp doff 5", "udp length 100",
                         "udp checksum 0", "th dport 53", "meta l4proto tcp th dport 22",
                         "meta l4proto udp @th,16,16 53", "sctp dport 5"]),
    )


_META = st.one_of(
    _value_test("iifname", st.sampled_from(['"eth0"', '"wt0"', '"eth*"', '"lo"']), ordered=False),
    _value_test("oifname", st.sampled_from(['"eth0"', '"wt0"', '"veth*"']), ordered=False),
    _value_test("meta mark", st.sampled_from(["0x10", "0x1", "0x0", "0x4000"]),
                ranges=st.just("0x1-0x5"), mask="0xff00"),
    _value_test("meta l4proto", st.sampled_from(["tcp", "udp", "icmp", "ipv6-icmp"]),
                ordered=False),
    _value_test("meta pkttype", st.sampled_from(["host", "broadcast", "multicast"]),
                ordered=False),
    st.sampled_from(["iif lo", "oif lo", "meta skuid 0", "meta length > 100", "meta cpu 0",
                     "meta nfproto ipv4", "meta protocol ip", "meta iiftype ether",
                     "meta priority none", "meta mark & 0x10 == 0x10", "meta skgid 0"]),
)
_CT = st.sampled_from(["ct state established,related", "ct state new", "ct state != invalid",
                       "ct mark 1", "ct status dnat", "ct direction original", "ct zone 1",
                       "ct state established ct state related"])
_OTHER = st.sampled_from([
    "fib daddr type local", "fib saddr . iif oif missing", "tcp option maxseg size 1000",
    "tcp option sack-perm exists", "socket transparent 1", "rt mtu 1000",
    "numgen inc mod 2 0", "jhash ip saddr mod 2 0", "ip saddr vmap { 10.0.0.1 : accept }",
    "meta mark set ip saddr map { 10.0.0.1 : 0x1 }",
])
_STATEMENTS = st.sampled_from([
    "counter", "log", 'log prefix "x "', "log group 1", "limit rate 10/second",
    "limit rate over 10/second", "limit rate 10 bytes/second", "meta mark set 0x1",
    "meta mark set meta mark or 0x10", "ct mark set 0x1", "meta nftrace set 1", "quota 100 bytes",
    "ip dscp set cs1", "tcp dport set 22", "notrack", "reject", "counter counter",
])
_VERDICTS = st.sampled_from(["", "accept", "drop", "return", "continue", "jump GEN", "goto GEN"])
_NAT = st.sampled_from(["masquerade", "snat to 10.0.0.1", "dnat to 10.0.0.1", "redirect to :8080"])


@st.composite
def cases(draw, families=("ip", "ip6")) -> Case:
    family = draw(st.sampled_from(families))
    table = draw(st.sampled_from(["filter", "filter", "filter", "nat", "mangle", "raw"]))
    chain = draw(st.sampled_from(("FORWARD",) * 3 + CHAINS[table] + (FOREIGN,)
                                 if table == "filter" else CHAINS[table]))
    position = draw(st.sampled_from(["above", "below"])) \
        if table == "filter" and chain != FOREIGN else "end"
    match = st.one_of(_network(family), _transport(family), _META, _CT, _OTHER)
    parts = draw(st.lists(match, min_size=0, max_size=3))
    if draw(st.booleans()):  # a repeated test of one field
        parts.append(draw(st.sampled_from(parts))) if parts else None
    if draw(st.integers(0, 3)) == 0:
        parts.append(draw(_STATEMENTS))
    if table == "nat" and draw(st.booleans()):
        parts.append(draw(_NAT))
    else:
        parts.append(draw(_VERDICTS))
    rule = " ".join(p for p in parts if p) or "counter"
    return Case(family, table, chain, position, rule)


# --- running a case ---------------------------------------------------------------------

def _setup_text(family: str, table: str) -> str:
    """kube-router's chains and jumps in filter, a GEN chain in the case's table."""
    lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
    lines += [f":{own} - [0:0]" for own in KUBE_ROUTER_JUMPS.values()]
    lines += [":GEN - [0:0]"] if table == "filter" else []
    for builtin in KUBE_ROUTER_JUMPS:
        spec = jump_spec(builtin)
        lines.append(f"-A {builtin} {' '.join(spec[:3])} \"{spec[3]}\" {' '.join(spec[4:])}")
    lines.append("COMMIT")
    if table != "filter":
        lines += [f"*{table}"] + [f":{c} ACCEPT [0:0]" for c in BUILTIN_CHAINS[(family, table)]]
        lines += [":GEN - [0:0]", "COMMIT"]
    return "\n".join(lines) + "\n"


def _run(argv: list[str], input: str | None = None, timeout: int = 30
         ) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, errors="replace",
                              input=input, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(argv, -9, exc.stdout or "", "timeout")


def save_outcome(done: subprocess.CompletedProcess, table: str) -> str:
    """saved | left out (a "# Table `T' is incompatible" line, exit 0) | aborted."""
    lines = done.stdout.splitlines()
    saved = f"*{table}" in lines and "COMMIT" in lines[lines.index(f"*{table}"):]
    return "saved" if saved and done.returncode == 0 else "aborted" if done.returncode \
        else "left out"


def _xt_exprs(family: str, table: str) -> dict[int, list]:
    """handle -> the rule's xt matches and targets, (name, info), in order (this netns)."""
    with NfSocket() as sock:
        snap = snapshot(sock, families=(family,))
    t = snap.tables.get(TableRef(family, table))
    out = {}
    for r in (t.rules if t else ()):
        out[r.handle] = [(e.name, e.fields.get("name"), e.fields.get("info") or b"")
                         for e in r.exprs if e.name in ("match", "target")]
    return out


def take_listing(family: str, table: str) -> dict[str, list] | None:
    """chain -> its rules, normalised (fwgate.compat.roundtrip), in this netns."""
    done = _run(["nft", "-n", "-j", "list", "table", family, table])
    if done.returncode:
        return None
    chains = listing(done.stdout, _xt_exprs(family, table))
    return {c: [exprs for _, exprs in rules] for c, rules in chains.items()}


# --- the verdicts ------------------------------------------------------------------------

@dataclass
class VersionResult:
    truth: str
    model: str
    calls: dict = field(default_factory=dict)      # call text -> (actual, predicted)
    detail: str = ""                               # what differed, what came back
    after_sync: str | None = None                  # the model's words for a misread
    written_back: str | None = None                # the model's line for a misread rule
    saved_rule: str = ""                           # the rule's line in iptables-save

    @property
    def back_ok(self) -> bool | None:
        """The rule the model says kube-router's restore writes back is the line this
        version's iptables-save wrote, which the restore reads (None: the model gave no
        line, or nothing was saved)."""
        if not self.written_back or not self.saved_rule:
            return None
        return self.written_back == self.saved_rule

    @property
    def agrees(self) -> bool:
        return self.truth == self.model and all(a in p or not p for a, p in self.calls.values()) \
            and self.back_ok is not False


@dataclass
class CaseResult:
    case: Case
    valid: bool                     # nft accepted it
    error: str = ""
    versions: dict[str, VersionResult] = field(default_factory=dict)

    @property
    def agrees(self) -> bool:
        return all(v.agrees for v in self.versions.values())

    def describe(self) -> str:
        out = [self.case.id]
        for v, r in self.versions.items():
            mark = "ok" if r.agrees else "DISAGREES"
            calls = "; ".join(f"{t}: {a} vs {sorted(p, key=str)}" for t, (a, p) in r.calls.items()
                              if p and a not in p)
            out.append(f"  {v}: truth {r.truth}, model {r.model} {mark} {calls} {r.detail}")
            if r.back_ok is False:
                out.append(f"    written back: model `{r.written_back}`, iptables-save "
                           f"`{r.saved_rule}`")
        return "\n".join(out)


def model_category(report: CompatReport, family: str, table: str, chain: str, handle: int
                   ) -> tuple[str, str | None, str | None]:
    """The model's verdict on one rule, in the ground truth's words; for a misread also
    its words for the sync and the line it says the restore writes back."""
    mine = lambda fs: [f for f in fs if (f.rule.family, f.rule.table, f.rule.chain,  # noqa: E731
                                         f.rule.handle) == (family, table, chain, handle)]
    bad = mine(report.findings)
    if bad:
        return ("blocking" if any(f.blocking for f in bad) else "broken"), None, None
    if any((d.family, d.table, d.chain) == (family, table, chain) for d in report.dropped_chains):
        return "dropped", None, None
    wrong = mine(report.misread)
    if wrong:
        return ("sync fails" if wrong[0].kind in SYNC_FAILS else "misread"), \
            wrong[0].after_sync, wrong[0].written_back
    return "ok", None, None


# misread kinds whose rule iptables-restore then refuses (the model's words for them)
SYNC_FAILS = {"refused"}


def judge(case: Case, versions: dict[str, str] | None = None) -> CaseResult:
    """Run one case in fresh namespaces against every version's binaries."""
    versions = versions or builds()
    tool = "ip6tables" if case.family == "ip6" else "iptables"
    with throwaway("fwd") as ns:
        def setup() -> CaseResult | None:
            done = _run([f"{tool}-restore"], input=_setup_text(case.family, case.table))
            if done.returncode:
                raise RuntimeError(f"setup failed: {done.stderr}")
            done = _run(["nft", "-f", "-"], input=case.nft_script())
            if done.returncode:
                return CaseResult(case, False, done.stderr.strip()[:300])
            with NfSocket() as sock:
                return snapshot(sock, families=(case.family,))
        snap = call_in(ns, setup)
        if isinstance(snap, CaseResult):
            return snap
        table = snap.tables[TableRef(case.family, case.table)]
        rules = table.rules_of(case.chain)
        jump = KUBE_ROUTER_JUMPS.get(case.chain) if case.table == "filter" else None
        ours = [r for r in rules if not (jump and r.exprs and
                                         r.exprs[-1].fields.get("data") == ("jump", jump))]
        if len(ours) != 1:
            return CaseResult(case, False, f"expected one rule in {case.chain}, found {len(ours)}")
        rule = ours[0]
        calls = calls_for(snap, CompatReport())
        calls = [c for c in calls if c.kind != "save" or c.table == case.table]
        if case.table != "filter":
            calls.append(Call(case.family, case.table, "list", case.chain, fatal=False))
        before = call_in(ns, take_listing, case.family, case.table) or {}
        result = CaseResult(case, True)
        for version, bindir in versions.items():
            report = analyse(snap, (profile_for(version),))
            model, after, line = model_category(report, case.family, case.table, case.chain,
                                                rule.handle)
            ran = call_in(ns, lambda: [(c, _run([f"{bindir}/{c.tool}", *c.args])) for c in calls])
            res = VersionResult("ok", model, after_sync=after, written_back=line)
            fatal = broken = False
            saved = None
            for call, done in ran:
                actual = save_outcome(done, call.table) if call.kind == "save" else done.returncode
                res.calls[call.text] = (actual, predict(report, snap, call))
                if call.kind == "save":
                    saved = done.stdout if actual == "saved" else None
                    broken |= actual != "saved"
                    if actual != "saved":
                        res.detail = f"save {actual} ({done.returncode}) {done.stderr.strip()[:120]}"
                elif call.failed(done.returncode):
                    fatal |= call.fatal
                    broken |= not call.fatal
                    res.detail = f"{call.text}: {done.returncode} {done.stderr.strip()[:120]}"
            if fatal:
                res.truth = "blocking"
            elif broken:
                res.truth = "broken"
            elif saved is not None:
                res.truth, res.detail, res.saved_rule = _round_trip(
                    case, bindir, saved, before, rule.position)
            result.versions[version] = res
        return result


def _round_trip(case: Case, bindir: str, saved: str, before: dict[str, list],
                position: int) -> tuple[str, str, str]:
    tool = "ip6tables" if case.family == "ip6" else "iptables"
    prefix = f"-A {case.chain} "
    # a rule iptables reads as no test and no target is saved as `-A CHAIN` alone
    lines = [ln for ln in saved.splitlines() if ln.startswith(prefix) or ln == prefix.strip()]
    with throwaway("fwr") as ns2:
        def restore():
            done = _run([f"{bindir}/{tool}-restore", "-T", case.table], input=saved)
            if done.returncode:
                return done, None
            return done, take_listing(case.family, case.table)
        done, after = call_in(ns2, restore)
    line = lines[position] if position < len(lines) else ""
    if done.returncode:
        return "sync fails", f"iptables-restore: {done.stderr.strip()[:200]}", line
    back = after or {}
    was, now = before.get(case.chain, []), back.get(case.chain)
    if now is None or len(now) < len(was):
        return "dropped", f"{case.chain}: {len(was)} rules, {len(now or [])} after the round trip", line
    if was != now:
        diff = next(((a, b) for a, b in zip(was, now) if a != b), (was, now))
        return "misread", f"was {short(diff[0])}, restored {short(diff[1])}", line
    others = {k: v for k, v in before.items() if k != case.chain}
    if any(back.get(k) != v for k, v in others.items()):
        return "misread", "another chain of the table changed in the round trip", line
    return "ok", "", line


def summary(results: list[CaseResult]) -> dict:
    """Per version: cases judged, agreed, the truth's categories, and disagreements by
    (truth, model)."""
    out: dict = {}
    for r in results:
        if not r.valid:
            continue
        for v, res in r.versions.items():
            s = out.setdefault(v, {"cases": 0, "agree": 0, "truth": {}, "model_alone": {},
                                   "disagreements": {}, "false_ok": 0, "false_block": 0,
                                   "written_back_said": 0, "written_back_right": 0,
                                   "written_back_unsaid": 0})
            if res.back_ok is not None:
                s["written_back_said"] += 1
                s["written_back_right"] += res.back_ok
            elif res.truth in ("misread", "sync fails") and res.saved_rule:
                s["written_back_unsaid"] += 1
            s["cases"] += 1
            s["agree"] += res.agrees
            s["truth"][res.truth] = s["truth"].get(res.truth, 0) + 1
            s["model_alone"][res.model] = s["model_alone"].get(res.model, 0) + 1
            if not res.agrees:
                key = f"{res.truth} / model {res.model}"
                s["disagreements"][key] = s["disagreements"].get(key, 0) + 1
            s["false_ok"] += res.model == "ok" and res.truth != "ok"
            s["false_block"] += res.model == "blocking" and res.truth != "blocking"
    return out


def clean_name(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60]
