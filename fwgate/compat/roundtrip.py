"""The save → restore round trip, compared: nft's JSON listings of a table before and
after, normalised so that only what changes which packets a rule matches, or what it
does to them, remains. Pure (fwgate.adapters.roundtrip runs the commands); shared by
`fwgate compat --verify` and the differential test (tests/fwgate_testing/differential.py).
"""
from __future__ import annotations

import json
import struct

# The round trip is judged on `nft -n -j list table` of the original namespace and of the
# restored one. What differs only in how a rule was written, not in which packets it
# matches or what it does to them, is normalised away:
#
# - counters (`counter`, its packets and bytes): they count, never decide; iptables
#   writes one into every rule, nft where it was asked for.
# - the protocol test nft writes for a transport header field (`meta l4proto tcp`
#   before `tcp dport`): iptables writes `-p tcp` as that same test, nft prints it when
#   it did not write it itself. A `meta l4proto P` in a rule that matches on P's header
#   is dropped, on both sides; `ip protocol P` is `meta l4proto P` (IPv4: the same byte).
# - `iif`/`oif` (an interface index) as `iifname`/`oifname`: iptables shows and restores
#   the index by its name; the same packets while the interface exists.
# - numeric tests as intervals: `< 443` is `<= 442`, `>= 1` is `> 0`, a range `1-10` is
#   `> 0` and `< 11`, and several tests of one field are the intersection of theirs
#   (ports, ttl, hop limit, ICMP type and code, lengths, marks). An interval that is
#   the field's whole range (`udp sport <= 65535`) holds for every packet that has the
#   field: it is the protocol test of a transport header field (`meta l4proto udp`),
#   and nothing for a field every packet has (ttl, mark).
# - the order of consecutive tests: they are side-effect free and all must hold
#   (iptables writes -p, addresses and interfaces first, its matches after).
# - an interface name compared without its padding (`"wt0"` as 4 bytes, nft's 16): nft
#   prints both the same already; nothing to do.
# - not normalised: an nft comment (rule userdata) comes back as an xt comment match
#   nft cannot show, and counts as a difference.
# - `continue`: the verdict a rule has when it has none (go on with the next rule).
# - a test repeated word for word: A and A selects what A does.
# - x_tables matches iptables-restore writes (icmp, icmp6, ttl, hl, pkttype, tcp/udp
#   ports) and targets (MARK), whose data nft cannot show: decoded from the kernel's
#   bytes (xt_decode) into the native expressions that do the same; others stay opaque.
# - symbolic constants: `nft -n` prints numbers on both sides.
# - jump/goto targets, set and map contents are compared as they are.

# `nft -n`: protocols as numbers
_PROTO_HEADERS = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6", 132: "sctp", 136: "udplite"}
_PROTO_NUMBERS = {name: num for num, name in _PROTO_HEADERS.items()}


def _is_protocol_test(e: dict) -> str | None:
    m = e.get("match")
    if not m or m.get("op") not in ("==", "in"):
        return None
    left, right = m.get("left", {}), m.get("right")
    if not isinstance(right, int):
        return None
    if left.get("meta", {}).get("key") == "l4proto" or \
            left.get("payload", {}).get("field") == "protocol" and \
            left.get("payload", {}).get("protocol") == "ip":
        return _PROTO_HEADERS.get(right)
    return None


def _header_of(e: dict) -> str | None:
    m = e.get("match")
    if not m:
        return None
    left = m.get("left", {})
    if "&" in left:
        left = left["&"][0]
    return left.get("payload", {}).get("protocol")


def _protocol_form(e: dict) -> dict:
    """`ip protocol P` as `meta l4proto P`: in the ip family both read iph->protocol
    (nf_tables_ipv4.h nft_set_pktinfo_ipv4 sets pkt->tprot from it); iptables 1.8.9
    writes -p one way, 1.8.11 the other."""
    m = e.get("match", {})
    if m.get("left", {}).get("payload") == {"protocol": "ip", "field": "protocol"}:
        return {"match": {**m, "left": {"meta": {"key": "l4proto"}}}}
    return e


_IFINDEX = {"iif": "iifname", "oif": "oifname"}
_WIDTH = {"sport": 16, "dport": 16, "ttl": 8, "hoplimit": 8, "type": 8, "code": 8,
          "length": 16, "mark": 32}
_BOUNDS = {"<": (0, -1), "<=": (0, 0), ">": (1, None), ">=": (0, None)}


def _interface_form(e: dict) -> dict:
    """`iif lo` as `iifname "lo"`: iptables shows an interface index by its name (-i lo)
    and restores the name; the same packets while the interface exists (nft prints the
    index by the name it has now)."""
    m = e.get("match", {})
    key = m.get("left", {}).get("meta", {}).get("key")
    if key in _IFINDEX:
        return {"match": {**m, "left": {"meta": {"key": _IFINDEX[key]}}}}
    return e


def _interval(e: dict) -> tuple[str, int, int] | None:
    """A numeric test as the closed interval it accepts: `< 443` is `<= 442`, `>= 1` is
    `> 0`, `1-10` is `> 0` and `< 11` (iptables writes -m ttl/hl and port ranges so)."""
    m = e.get("match", {})
    left, op, right = m.get("left", {}), m.get("op"), m.get("right")
    leaf = left.get("payload") or left.get("meta") or {}
    width = _WIDTH.get(leaf.get("field") or leaf.get("key"))
    if width is None:
        return None
    top = (1 << width) - 1
    if op == "==" and isinstance(right, dict) and "range" in right:
        lo, hi = right["range"]
    elif isinstance(right, int) and op == "==":
        lo = hi = right
    elif isinstance(right, int) and op in _BOUNDS:
        low, high = _BOUNDS[op]
        lo, hi = (right + low, top) if high is None else (0, right + high)
    else:
        return None
    return json.dumps(left, sort_keys=True), lo, hi


def _intervals(run: list) -> list:
    """Tests of one numeric field in a run of tests, as one interval (all must hold)."""
    out, spans = [], {}
    for e in run:
        iv = _interval(e)
        if iv is None:
            out.append(e)
            continue
        key, lo, hi = iv
        old = spans.get(key, (lo, hi))
        spans[key] = (max(old[0], lo), min(old[1], hi))
    for key, (lo, hi) in spans.items():
        left = json.loads(key)
        leaf = left.get("payload") or left.get("meta") or {}
        top = (1 << _WIDTH[leaf.get("field") or leaf.get("key")]) - 1
        if (lo, hi) == (0, top):   # the whole range: only the field's presence is tested
            proto = _PROTO_NUMBERS.get(leaf.get("protocol"))
            if proto is not None:
                out.append(_match({"meta": {"key": "l4proto"}}, "==", proto))
            continue
        out.append({"match": {"op": "interval", "left": left, "right": [lo, hi]}})
    return out


def normalise(exprs: list[dict]) -> list:
    exprs = [_interface_form(_protocol_form(e)) for e in exprs
             if "counter" not in e and "continue" not in e]
    headers = {_header_of(e) for e in exprs}
    out: list = []
    run: list = []   # consecutive tests: their order does not matter
    for e in exprs:
        if "match" in e:
            proto = _is_protocol_test(e)
            if proto and proto in headers:
                continue  # implied by the header match nft prints for it
            if e not in run:
                run.append(e)  # the same test twice: A and A is A
            continue
        out += sorted(_intervals(run), key=json.dumps)
        run = []
        out.append(e)
    return out + sorted(_intervals(run), key=json.dumps)


def _match(left: dict, op: str, right) -> dict:
    return {"match": {"op": op, "left": left, "right": right}}


def _ports(proto: str, spts: tuple[int, int], dpts: tuple[int, int], inv: int) -> list:
    out = []
    for name, (lo, hi), bit in (("sport", spts, 1), ("dport", dpts, 2)):
        if (lo, hi) == (0, 65535) and not inv & bit:
            continue
        right = lo if lo == hi else {"range": [lo, hi]}
        out.append(_match({"payload": {"protocol": proto, "field": name}},
                          "!=" if inv & bit else "==", right))
    return out


_TTL_OPS = {0: "==", 1: "!=", 2: "<", 3: ">"}


def xt_target_decode(name: str, info: bytes) -> list | None:
    """MARK --set-xmark V/0xffffffff is `meta mark set V`; others stay opaque."""
    if name == "MARK" and len(info) >= 8:
        mark, mask = struct.unpack("=II", info[:8])
        if mask == 0xffffffff:
            return [{"mangle": {"key": {"meta": {"key": "mark"}}, "value": mark}}]
    return None


def xt_decode(name: str, info: bytes) -> list | None:
    """The native tests an xt match stands for (nft -n -j's shape); None: keep it opaque."""
    if name in ("icmp", "icmp6") and len(info) >= 4:
        proto = "icmp" if name == "icmp" else "icmpv6"
        kind, c0, c1, inv = info[0], info[1], info[2], info[3] & 1
        if kind == 255 and not inv and name == "icmp":
            return []   # any ICMP type: only the protocol test before it is left
        if inv:
            if (c0, c1) != (0, 255):
                return None
            return [_match({"payload": {"protocol": proto, "field": "type"}}, "!=", kind)]
        out = [_match({"payload": {"protocol": proto, "field": "type"}}, "==", kind)]
        if (c0, c1) != (0, 255):
            out.append(_match({"payload": {"protocol": proto, "field": "code"}}, "==",
                              c0 if c0 == c1 else {"range": [c0, c1]}))
        return out
    if name in ("ttl", "hl") and len(info) >= 2 and info[0] in _TTL_OPS:
        left = {"payload": {"protocol": "ip", "field": "ttl"}} if name == "ttl" else \
            {"payload": {"protocol": "ip6", "field": "hoplimit"}}
        return [_match(left, _TTL_OPS[info[0]], info[1])]
    if name == "pkttype" and len(info) >= 8:
        kind, inv = struct.unpack("=ii", info[:8])
        return [_match({"meta": {"key": "pkttype"}}, "!=" if inv else "==", kind)]
    if name == "udp" and len(info) >= 9:
        s0, s1, d0, d1 = struct.unpack("=4H", info[:8])
        return _ports("udp", (s0, s1), (d0, d1), info[8])
    if name == "tcp" and len(info) >= 12:
        s0, s1, d0, d1 = struct.unpack("=4H", info[:8])
        option, fmask, _fcmp, inv = info[8], info[9], info[10], info[11]
        if option or fmask or inv & 0xc:
            return None
        return _ports("tcp", (s0, s1), (d0, d1), inv)
    return None


def listing(text: str, xts: dict[int, list]) -> dict[str, list]:
    """chain -> [(handle, normalised expressions)] from `nft -n -j list table`'s text;
    xts: handle -> the rule's xt matches and targets, (match|target, name, info), in order."""
    chains: dict[str, list] = {}
    for item in json.loads(text).get("nftables", []):
        if "chain" in item:
            chains.setdefault(item["chain"]["name"], [])
        elif "rule" in item:
            r = item["rule"]
            mine = list(xts.get(r.get("handle"), []))
            exprs = []
            for e in r["expr"]:
                if "xt" in e and mine:
                    kind, name, info = mine.pop(0)
                    native = xt_decode(name, info) if kind == "match" else \
                        xt_target_decode(name, info)
                    if native is not None:
                        exprs += native
                        continue
                exprs.append(e)
            chains.setdefault(r["chain"], []).append((r.get("handle"), normalise(exprs)))
    return chains


def short(exprs: list) -> str:
    return json.dumps(exprs, separators=(",", ":"))[:300]


def against_model(trip, report) -> dict:
    """One table's round trip (adapters.roundtrip.TableTrip) beside the reader's report:
    the JSON `fwgate compat --verify` prints, with where the two disagree."""
    fam, table = trip.family, trip.table
    mine = lambda fs: {f.rule.handle: f for f in fs  # noqa: E731
                       if (f.rule.family, f.rule.table) == (fam, table)}
    bad, wrong = mine(report.findings), mine(report.misread)
    out = {"family": fam, "table": table, "binary": trip.binary, "saved": trip.saved,
           "restore_error": trip.restore_error, "error": trip.error,
           "gone_chains": trip.gone_chains,
           "changed": [{"chain": c.chain, "position": c.position, "handle": c.handle,
                        "now": c.now, "after": c.after,
                        "model": (wrong[c.handle].kind if c.handle in wrong else
                                  "finding" if c.handle in bad else None)}
                       for c in trip.changed]}
    disagree = []
    if trip.error:
        out["disagreements"] = []
        return out
    predicted = report.save_outcome(fam, table)
    if predicted is not None and predicted != trip.saved:
        disagree.append(f"iptables-save: the model says {predicted}, the binary {trip.saved}")
    refused = [f for f in wrong.values() if f.kind == "refused"]
    if trip.restore_error and not refused:
        disagree.append(f"iptables-restore refused the saved text ({trip.restore_error}); "
                        f"the model expected it to pass")
    if trip.saved == "saved" and not trip.restore_error:
        if refused:
            disagree.append("the model expected iptables-restore to refuse the text; it passed")
        changed = {c.handle for c in trip.changed}
        for c in trip.changed:
            if c.handle not in wrong and c.handle not in bad:
                disagree.append(f"{c.chain} rule {c.position} (handle {c.handle}) comes back "
                                f"changed; the model says nothing")
        for handle, f in wrong.items():
            if handle not in changed and f.rule.chain not in trip.gone_chains:
                disagree.append(f"{f.rule.chain} rule {f.rule.position} (handle {handle}): the "
                                f"model says misread ({f.kind}); it comes back the same")
    out["disagreements"] = disagree
    return out
