"""Rulesets as the components write them, for tests and bench/ alike.

`filter_table(n)`: kube-proxy's and kube-router's rules in iptables-restore's text, n rules.
`kube_router_filter`, `kube_proxy_nat`, `MARKS_NETBIRD`: a k3s-sized node for the mark model.
`netbird()`, `KUBE_ROUTER`, `PORTMAP`, `KUBE_PROXY`: the node of the packet-level mark tests
(tests/netns/test_marks_packets.py), each citing the upstream source it follows.
"""
from __future__ import annotations


# --- a kube-proxy / kube-router filter table of any size --------------------------------

def _pod_block(i: int) -> tuple[list[str], list[str]]:
    """kube-router's per-pod firewall chain and one network policy: 10 rules."""
    pod, pol = f"KUBE-POD-FW-{i:012X}", f"KUBE-NWPLCY-{i:012X}"
    ip = f"10.42.{(i >> 8) & 255}.{i & 255}"
    c = f'-m comment --comment "rule to jump traffic destined to POD name:web-{i} namespace: ns-{i % 97} to chain {pod}"'
    rules = [
        f"-A KUBE-ROUTER-FORWARD {c} -d {ip}/32 -j {pod}",
        f"-A KUBE-ROUTER-OUTPUT {c} -s {ip}/32 -j {pod}",
        f'-A {pod} -m comment --comment "rule for stateful firewall for pod" '
        f"-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        f'-A {pod} -m comment --comment "rule to drop invalid state for pod" '
        f"-m conntrack --ctstate INVALID -j DROP",
        f'-A {pod} -d {ip}/32 -m comment --comment "rule to permit the traffic to pods '
        f'when source is the pod\'s local node" -m addrtype --src-type LOCAL -j ACCEPT',
        f'-A {pod} -m comment --comment "run through nw policy ns-{i % 97}-allow-web" -j {pol}',
        f"-A {pol} -p tcp -m multiport --dports 80,443,8080,{8000 + i % 1000} "
        f'-m comment --comment "rule to ACCEPT traffic from all sources to dest pods selected '
        f'by policy name: allow-web namespace ns-{i % 97}" -j MARK --set-xmark 0x10000/0x10000',
        f'-A {pol} -m comment --comment "rule to ACCEPT traffic" -m mark --mark 0x10000/0x10000 '
        f"-j RETURN",
        f'-A {pod} -m comment --comment "rule to log dropped traffic POD name:web-{i}" '
        f"-m mark ! --mark 0x10000/0x10000 -m limit --limit 10/min --limit-burst 10 "
        f"-j NFLOG --nflog-group 100",
        f'-A {pod} -m comment --comment "rule to REJECT traffic destined for POD name:web-{i}" '
        f"-m mark ! --mark 0x10000/0x10000 -j REJECT --reject-with icmp-port-unreachable",
    ]
    return [pod, pol], rules


def _service_block(i: int) -> list[str]:
    """kube-proxy's filter-table rules for a service without endpoints, and the like: 5 rules."""
    vip = f"10.43.{(i >> 8) & 255}.{i & 255}"
    return [
        f'-A KUBE-SERVICES -d {vip}/32 -p tcp -m comment --comment "ns-{i % 97}/svc-{i}:http '
        f'has no endpoints" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable',
        f'-A KUBE-EXTERNAL-SERVICES -p tcp -m comment --comment "ns-{i % 97}/svc-{i}:http has no '
        f'endpoints" -m addrtype --dst-type LOCAL -m tcp --dport {30000 + i % 2000} '
        f"-j REJECT --reject-with icmp-port-unreachable",
        f'-A KUBE-NODEPORTS -p tcp -m comment --comment "ns-{i % 97}/svc-{i}:health" '
        f"-m tcp --dport {31000 + i % 2000} -j ACCEPT",
        f"-A KUBE-FORWARD -s 10.42.{(i >> 8) & 255}.0/24 -i cni0 -o wt0 "
        f'-m comment --comment "svc-{i} egress via the tunnel" -j ACCEPT',
        f"-A KUBE-PROXY-FIREWALL -d {vip}/32 -p udp -m comment --comment "
        f'"ns-{i % 97}/svc-{i}:dns traffic not accepted by KUBE-FW" -m udp --dport 53 -j DROP',
    ]


_HEAD_RULES = [
    '-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
    '-A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS',
    '-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES',
    "-A INPUT -j KUBE-FIREWALL",
    '-A FORWARD -m comment --comment "kube-router netpol - TEMCG2JMHZYE7H7T" -j KUBE-ROUTER-FORWARD',
    '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
    '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A OUTPUT -m comment --comment "kube-router netpol - VEAAIY32XVBHCSCY" -j KUBE-ROUTER-OUTPUT',
    '-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    "-A OUTPUT -j KUBE-FIREWALL",
    "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
    '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT',
    '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
    '-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet connections" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP',
]
_FIXED_CHAINS = ["KUBE-PROXY-FIREWALL", "KUBE-NODEPORTS", "KUBE-EXTERNAL-SERVICES", "KUBE-FIREWALL",
                 "KUBE-ROUTER-FORWARD", "KUBE-ROUTER-OUTPUT", "KUBE-FORWARD", "KUBE-SERVICES"]


def filter_table(n_rules: int) -> str:
    """iptables-restore input for an `ip filter` table of exactly n_rules rules:
    two thirds kube-router pod firewalls and policies, one third kube-proxy services."""
    chains, rules = list(_FIXED_CHAINS), list(_HEAD_RULES)
    i = 0
    while len(rules) < n_rules:
        if i % 3 == 2:
            rules += _service_block(i)
        else:
            new, block = _pod_block(i)
            chains += new
            rules += block
        i += 1
    rules = rules[:n_rules]
    used = {r.split()[1] for r in rules}
    lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
    lines += [f":{c} - [0:0]" for c in chains if c in used or any(f"-j {c}" in r for r in rules)]
    lines += rules + ["COMMIT", ""]
    return "\n".join(lines)


# --- a k3s-sized node for the mark model ------------------------------------------------

MARKS_NETBIRD = """table ip netbird {
  chain netbird-mangle-prerouting {
    type filter hook prerouting priority mangle; policy accept;
    iifname "wt0" ct state new meta mark set 0x1bd20
  }
  chain netbird-acl-forward-filter {
    type filter hook forward priority filter; policy accept;
    meta mark 0x1bd20 accept
    iifname "wt0" drop
  }
}
"""


def kube_router_filter(pods: int) -> str:
    lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
             ":KUBE-ROUTER-FORWARD - [0:0]", ":KUBE-NWPLCY-COMMON - [0:0]"]
    rules = ['-A FORWARD -m comment --comment "kube-router netpol - TEMCG2JMHZYE7H7T" '
             '-j KUBE-ROUTER-FORWARD',
             '-A KUBE-NWPLCY-COMMON -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT']
    for i in range(pods):
        fw, pol = f"KUBE-POD-FW-{i:016X}", f"KUBE-NWPLCY-{i:016X}"
        pod, peer = f"10.42.{(i >> 8) & 255}.{i & 255}", f"10.43.{(i >> 8) & 255}.{i & 255}"
        name = f'POD name:web-{i} namespace: ns-{i % 97}'
        match = f"-s {peer}/32 -p tcp --dport {8000 + i % 1000}"
        lines += [f":{fw} - [0:0]", f":{pol} - [0:0]"]
        rules += [
            f'-A KUBE-ROUTER-FORWARD -d {pod}/32 -m comment --comment "to {name}" -j {fw}',
            f'-A KUBE-ROUTER-FORWARD -s {pod}/32 -m comment --comment "from {name}" -j {fw}',
            f"-A {fw} -j KUBE-NWPLCY-COMMON",
            f'-A {fw} -d {pod}/32 -m comment --comment "run through nw policy allow-{i}" -j {pol}',
            f'-A {pol} {match} -m comment --comment "ACCEPT from peers of allow-{i}" '
            f"-j MARK --set-xmark 0x10000/0x10000",
            f'-A {pol} {match} -m comment --comment "ACCEPT from peers of allow-{i}" '
            f"-m mark --mark 0x10000/0x10000 -j RETURN",
            f'-A {fw} -m comment --comment "rule to log dropped traffic {name}" '
            f"-m mark ! --mark 0x10000/0x10000 -m limit --limit 10/min -j NFLOG --nflog-group 100",
            f'-A {fw} -m comment --comment "rule to REJECT traffic destined for {name}" '
            f"-m mark ! --mark 0x10000/0x10000 -j REJECT",
            f"-A {fw} -j MARK --set-xmark 0x0/0x10000",
            f'-A {fw} -m comment --comment "set mark to ACCEPT traffic that comply to network '
            f'policies" -j MARK --set-xmark 0x20000/0x20000']
    rules.append('-A KUBE-ROUTER-FORWARD -m mark --mark 0x20000/0x20000 -j ACCEPT')
    return "\n".join(lines + rules + ["COMMIT", ""])


def kube_proxy_nat(services: int) -> str:
    lines = ["*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
             ":POSTROUTING ACCEPT [0:0]", ":KUBE-SERVICES - [0:0]", ":KUBE-MARK-MASQ - [0:0]"]
    rules = ['-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
             '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
             "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000"]
    for i in range(services):
        svc, sep = f"KUBE-SVC-{i:016X}", f"KUBE-SEP-{i:016X}"
        vip, ep = f"10.96.{(i >> 8) & 255}.{i & 255}", f"10.44.{(i >> 8) & 255}.{i & 255}"
        lines += [f":{svc} - [0:0]", f":{sep} - [0:0]"]
        rules += [f'-A KUBE-SERVICES -d {vip}/32 -p tcp -m comment --comment "ns/svc-{i}" '
                  f"-m tcp --dport 80 -j {svc}",
                  f"-A {svc} ! -s 10.42.0.0/16 -d {vip}/32 -p tcp -m tcp --dport 80 -j KUBE-MARK-MASQ",
                  f"-A {svc} -j {sep}",
                  f"-A {sep} -s {ep}/32 -j KUBE-MARK-MASQ",
                  f"-A {sep} -p tcp -m tcp -j DNAT --to-destination {ep}:80"]
    return "\n".join(lines + rules + ["COMMIT", ""])


# --- the packet-level mark tests' node --------------------------------------------------

NODE_WT0, PEER_WT0, POD = "100.64.0.1", "100.64.0.2", "10.42.0.5"
HOSTPORT, SERVICE_PORT = 80, 81


def netbird(masked: bool = False) -> str:
    """Netbird's table: mangle prerouting marks peers' traffic to local addresses
    (redirected, e.g. by a hostPort) 0x1bd20 (acl_linux.go createPreroutingRule); the
    forward filter accepts that mark, sends wt0 traffic to its route chain, then drops
    it (createDefaultChains, addFwmarkToForward); conntrack marks (setupDataPlaneMark);
    masquerade by mark (addPostroutingRules). masked: the same, with the mark kept to
    the low 12 bits and tested under 0xfff."""
    if masked:
        set_redirected = "meta mark set meta mark & 0xfffff000 | 0x00000d20"
        is_redirected = "meta mark & 0x00000fff == 0x00000d20"
        is_masq, is_masq_return = "meta mark & 0x00000fff == 0x00000d21", \
            "meta mark & 0x00000fff == 0x00000d22"
    else:
        set_redirected = "meta mark set 0x0001bd20"
        is_redirected = "meta mark 0x0001bd20"
        is_masq, is_masq_return = "meta mark 0x0001bd21", "meta mark 0x0001bd22"
    return f"""
table ip netbird {{
  chain netbird-rt-fwd {{
    ct state established,related counter accept
  }}
  chain netbird-acl-input-rules {{
    ct state established,related counter accept
    ip saddr {PEER_WT0} accept
  }}
  chain netbird-acl-input-filter {{
    type filter hook input priority filter; policy accept;
    iifname "wt0" jump netbird-acl-input-rules
    iifname "wt0" drop
  }}
  chain netbird-acl-forward-filter {{
    type filter hook forward priority filter; policy accept;
    {is_redirected} accept
    iifname "wt0" jump netbird-rt-fwd
    iifname "wt0" counter drop
  }}
  chain netbird-mangle-prerouting {{
    type filter hook prerouting priority mangle; policy accept;
    iifname "wt0" ip saddr {PEER_WT0} fib daddr type local {set_redirected}
    iifname "wt0" ct state new ct mark set 0x0001bd10
  }}
  chain netbird-mangle-postrouting {{
    type filter hook postrouting priority mangle; policy accept;
    oifname "wt0" ct state new ct mark set 0x0001bd11
  }}
  chain netbird-rt-postrouting {{
    type nat hook postrouting priority srcnat - 1; policy accept;
    {is_masq} oifname != "lo" counter masquerade
    {is_masq_return} oifname "wt0" counter masquerade
  }}
}}
"""


POD_FW = "KUBE-POD-FW-ABCDEFGHIJKLMNOP"
POD_NAME = "name:traefik namespace: kube-system"
# kube-router (k3s-io/kube-router) pkg/controllers/netpol: the top-level jumps
# (ensureTopLevelChains), KUBE-NWPLCY-COMMON and -DEFAULT (network_policy_controller.go),
# the pod firewall with no policy selecting the pod (pod.go: setupPodNetpolRules,
# interceptPodInboundTraffic/OutboundTraffic, dropUnmarkedTrafficRules, the 0x20000 mark)
# and the explicit accept (ensureExplicitAccept). Restored without --noflush, as each sync.
KUBE_ROUTER = f"""*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-ROUTER-FORWARD - [0:0]
:KUBE-ROUTER-INPUT - [0:0]
:KUBE-ROUTER-OUTPUT - [0:0]
:KUBE-NWPLCY-COMMON - [0:0]
:KUBE-NWPLCY-DEFAULT - [0:0]
:{POD_FW} - [0:0]
-A INPUT -m comment --comment "kube-router netpol - 4IA2OSFRMVNDXBVV" -j KUBE-ROUTER-INPUT
-A FORWARD -m comment --comment "kube-router netpol - TEMCG2JMHZYE7H7T" -j KUBE-ROUTER-FORWARD
-A OUTPUT -m comment --comment "kube-router netpol - VEAAIY32XVBHCSCY" -j KUBE-ROUTER-OUTPUT
-A KUBE-NWPLCY-COMMON -m comment --comment "rule to drop invalid state for pod" -m conntrack --ctstate INVALID -j DROP
-A KUBE-NWPLCY-COMMON -m comment --comment "rule for stateful firewall for pod" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A KUBE-NWPLCY-COMMON -p icmp -m comment --comment "allow icmp echo requests" -m icmp --icmp-type 8 -j ACCEPT
-A KUBE-NWPLCY-DEFAULT -m comment --comment "rule to mark traffic matching a network policy" -j MARK --set-xmark 0x10000/0x10000
-A {POD_FW} -m comment --comment "common bi-directional traffic policy rules" -j KUBE-NWPLCY-COMMON
-A {POD_FW} -d {POD} -m comment --comment "rule to permit the traffic traffic to pods when source is the pod's local node" -m addrtype --src-type LOCAL -j ACCEPT
-A {POD_FW} -s {POD} -m comment --comment "run through default egress network policy chain" -j KUBE-NWPLCY-DEFAULT
-A {POD_FW} -d {POD} -m comment --comment "run through default ingress network policy chain" -j KUBE-NWPLCY-DEFAULT
-A {POD_FW} -m comment --comment "rule to log dropped traffic POD {POD_NAME}" -m mark ! --mark 0x10000/0x10000 -m limit --limit 10/min --limit-burst 10 -j NFLOG --nflog-group 100
-A {POD_FW} -m comment --comment "rule to REJECT traffic destined for POD {POD_NAME}" -m mark ! --mark 0x10000/0x10000 -j REJECT --reject-with icmp-port-unreachable
-A {POD_FW} -j MARK --set-xmark 0x0/0x10000
-A {POD_FW} -m comment --comment "set mark to ACCEPT traffic that comply to network policies" -j MARK --set-xmark 0x20000/0x20000
-A KUBE-ROUTER-FORWARD -d {POD} -m comment --comment "rule to jump traffic destined to POD {POD_NAME} to chain {POD_FW}" -j {POD_FW}
-A KUBE-ROUTER-FORWARD -d {POD} -m physdev --physdev-is-bridged -m comment --comment "rule to jump traffic destined to POD {POD_NAME} to chain {POD_FW}" -j {POD_FW}
-A KUBE-ROUTER-FORWARD -s {POD} -m comment --comment "rule to jump traffic from POD {POD_NAME} to chain {POD_FW}" -j {POD_FW}
-A KUBE-ROUTER-OUTPUT -d {POD} -m comment --comment "rule to jump traffic destined to POD {POD_NAME} to chain {POD_FW}" -j {POD_FW}
-A KUBE-ROUTER-FORWARD -m comment --comment "rule to explicitly ACCEPT traffic that comply to network policies" -m mark --mark 0x20000/0x20000 -j ACCEPT
-A KUBE-ROUTER-OUTPUT -m comment --comment "rule to explicitly ACCEPT traffic that comply to network policies" -m mark --mark 0x20000/0x20000 -j ACCEPT
COMMIT
"""

# CNI portmap (containernetworking/plugins plugins/meta/portmap/portmap_iptables.go): a
# hostPort, as k3s's traefik has, with its hairpin mark 0x2000 (markMasqBit 13).
PORTMAP = f"""*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:CNI-HOSTPORT-DNAT - [0:0]
:CNI-HOSTPORT-SETMARK - [0:0]
:CNI-HOSTPORT-MASQ - [0:0]
:CNI-DN-0ffdff59029f5c5556a11 - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ
-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE
-A CNI-HOSTPORT-SETMARK -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000
-A CNI-HOSTPORT-DNAT -p udp -m comment --comment "dnat name: \\"cbr0\\" id: \\"deb7a2b32ae6\\"" -m multiport --dports {HOSTPORT} -j CNI-DN-0ffdff59029f5c5556a11
-A CNI-DN-0ffdff59029f5c5556a11 -s 10.42.0.0/24 -p udp -m udp --dport {HOSTPORT} -j CNI-HOSTPORT-SETMARK
-A CNI-DN-0ffdff59029f5c5556a11 -s 127.0.0.1/32 -p udp -m udp --dport {HOSTPORT} -j CNI-HOSTPORT-SETMARK
-A CNI-DN-0ffdff59029f5c5556a11 -p udp -m udp --dport {HOSTPORT} -j DNAT --to-destination {POD}:{HOSTPORT}
COMMIT
"""

# kube-proxy's fixed nat rules, iptables mode (kubernetes pkg/proxy/iptables/proxier.go,
# written at every sync): the jumps to KUBE-SERVICES and KUBE-POSTROUTING, which
# masquerades what carries 0x4000 (--iptables-masquerade-bit 14), and KUBE-MARK-MASQ.
KUBE_PROXY_FIXED = """-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000"""

# kube-proxy, iptables mode (kubernetes pkg/proxy/iptables/proxier.go): a service on an
# external IP (the node's wt0 address) with one endpoint, the pod; KUBE-MARK-MASQ ORs
# 0x4000 (--iptables-masquerade-bit 14), KUBE-POSTROUTING masquerades what carries it.
SVC, EXT, SEP = "KUBE-SVC-WEBAAAAAAAAAAAAA", "KUBE-EXT-WEBAAAAAAAAAAAAA", "KUBE-SEP-WEBAAAAAAAAAAAAA"
KUBE_PROXY = f"""*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:{SVC} - [0:0]
:{EXT} - [0:0]
:{SEP} - [0:0]
{KUBE_PROXY_FIXED}
-A KUBE-SERVICES -d {NODE_WT0}/32 -p udp -m comment --comment "default/web:udp external IP" -m udp --dport {SERVICE_PORT} -j {EXT}
-A {EXT} -m comment --comment "masquerade traffic for default/web:udp external destinations" -j KUBE-MARK-MASQ
-A {EXT} -j {SVC}
-A {SVC} -m comment --comment "default/web:udp -> {POD}:{SERVICE_PORT}" -j {SEP}
-A {SEP} -s {POD}/32 -m comment --comment "default/web:udp" -j KUBE-MARK-MASQ
-A {SEP} -p udp -m comment --comment "default/web:udp" -m udp -j DNAT --to-destination {POD}:{SERVICE_PORT}
COMMIT
"""


# kubelet's rules (kubernetes pkg/kubelet/kubelet_network_linux.go syncNetworkUtil, read at
# commit 02c82103, before the IPTablesOwnershipCleanup gate removed them), as
# `iptables-save` shows them: KUBE-MARK-DROP ORs the drop bit (--iptables-drop-bit 15),
# KUBE-FIREWALL, jumped to first from INPUT and OUTPUT, drops what carries it.
KUBELET = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-MARK-DROP - [0:0]
-A KUBE-MARK-DROP -j MARK --or-mark 0x8000
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-FIREWALL - [0:0]
-A INPUT -j KUBE-FIREWALL
-A OUTPUT -j KUBE-FIREWALL
-A KUBE-FIREWALL -m comment --comment "kubernetes firewall for dropping marked packets" -m mark --mark 0x8000/0x8000 -j DROP
-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet connections" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
COMMIT
"""

# k3s's kube-router puts its explicit accept into the built-in chains too, in its own
# words (k3s-io/kube-router pkg/controllers/netpol network_policy_controller.go,
# ensureExplicitAccept, as seen in `iptables-save` on k3s nodes).
K3S_EXPLICIT_ACCEPT = "\n".join(
    f'-A {chain} -m comment --comment "KUBE-ROUTER rule to explicitly ACCEPT traffic that '
    f'comply to network policies" -m mark --mark 0x20000/0x20000 -j ACCEPT'
    for chain in ("INPUT", "FORWARD", "OUTPUT"))
# flannel (flannel-io/flannel pkg/trafficmngr/iptables/iptables.go, MasqRules and
# ForwardRules, v0.25): it leaves what kube-proxy marked 0x4000 to kube-proxy's masquerade.
FLANNEL = """*nat
:POSTROUTING ACCEPT [0:0]
:FLANNEL-POSTRTG - [0:0]
-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.42.0.0/24 -d 10.42.0.0/16 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.42.0.0/16 -d 10.42.0.0/24 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG ! -s 10.42.0.0/16 -d 10.42.0.0/24 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.42.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
-A FLANNEL-POSTRTG ! -s 10.42.0.0/16 -d 10.42.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
COMMIT
*filter
:FORWARD ACCEPT [0:0]
:FLANNEL-FWD - [0:0]
-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
-A FLANNEL-FWD -s 10.42.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
-A FLANNEL-FWD -d 10.42.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
COMMIT
"""
