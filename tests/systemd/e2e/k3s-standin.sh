#!/bin/sh
# Stand-in for k3s (tests only): kube-router's first iptables calls at start,
# with Debian's iptables-nft 1.8.9 (the version k3s bundles). "-C" exiting 1
# (no such rule yet) is the normal answer; exit 3 / "Parsing nftables rule
# failed" / "incompatible" is the crash that makes k3s loop. Then idle.
crashed() {
    case "$1:$2" in 3:*|*"Parsing nftables rule failed"*|*incompatible*) return 0;; esac
    return 1
}

# kube-router creates its chain before it looks for the jump to it.
iptables -t filter -N KUBE-ROUTER-FORWARD 2>/dev/null

out=$(iptables -t filter -C FORWARD -m comment --comment "kube-router netpol - TEMCG2JMHZYE7H7T" \
      -j KUBE-ROUTER-FORWARD 2>&1); rc=$?
echo "kube-router: iptables -C FORWARD: exit $rc${out:+: $out}"
if crashed "$rc" "$out"; then exit 3; fi

out=$(iptables -t filter -S FORWARD 2>&1); rc=$?
echo "kube-router: iptables -S FORWARD: exit $rc${out:+: $out}"
if [ "$rc" != 0 ]; then exit 3; fi

# Background notify, exec sleep: the sender stays attributable (harness README).
systemd-notify --ready --status="kube-router's iptables calls passed" &
exec sleep infinity
