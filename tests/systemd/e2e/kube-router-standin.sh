#!/bin/sh
# Stand-in for k3s (tests only): kube-router's network-policy controller, as its
# iptables calls are in k3s-io/kube-router v2 (network_policy_controller.go):
# ensureTopLevelChains at start and at the start of every full sync, then the
# sync's save/restore of the filter table. Every SYNC seconds, like a busy node.
#
# Fatal, as klog.Fatalf makes them (k3s dies, exit 255): a failing `-S CHAIN 1`
# (other than "no such chain"), `-N`, `-C`, `-I`, `-S FORWARD`. Logged only: the
# save and the restore. iptables is whatever PATH gives (the unit sets k3s's).
SYNC=${SYNC:-2}
HASH=TEMCG2JMHZYE7H7T    # kube-router's hash of the node name; fixed here

fatal() {
    echo "kube-router: F: $*"
    exit 255
}

# ensureRuleAtPosition(chain, jump, 1): -C; missing: -I at 1; present: -S to check its place
ensure_jump() {
    builtin=$1 custom=$2
    comment="kube-router netpol - $HASH"
    out=$(iptables -t filter -C "$builtin" -m comment --comment "$comment" -j "$custom" 2>&1); rc=$?
    case $rc in
    0)  out=$(iptables -t filter -S "$builtin" 2>&1) ||
            fatal "failed to list rules in filter table $builtin chain: $out"
        first=$(printf '%s\n' "$out" | sed -n 2p)
        case $first in
        *"$custom"*) ;;
        *) iptables -t filter -D "$builtin" -m comment --comment "$comment" -j "$custom" &&
           iptables -t filter -I "$builtin" 1 -m comment --comment "$comment" -j "$custom" ||
               fatal "failed to move the jump to $custom to the top of $builtin" ;;
        esac ;;
    1)  case $out in
        *"does a matching rule exist"*|"") ;;
        *) fatal "failed to check for the rule in $builtin: $out" ;;
        esac
        iptables -t filter -I "$builtin" 1 -m comment --comment "$comment" -j "$custom" 2>&1 ||
            fatal "failed to insert the jump to $custom into $builtin" ;;
    *)  fatal "failed to check for the rule in $builtin (exit $rc): $out" ;;
    esac
}

ensure_top_level_chains() {
    for pair in INPUT:KUBE-ROUTER-INPUT FORWARD:KUBE-ROUTER-FORWARD OUTPUT:KUBE-ROUTER-OUTPUT; do
        builtin=${pair%%:*} custom=${pair#*:}
        # go-iptables' ChainExists: exit 0 exists, exit 1 does not, else an error.
        out=$(iptables -t filter -S "$custom" 1 2>&1); rc=$?
        case $rc in
        0) ;;
        1) out=$(iptables -t filter -N "$custom" 2>&1) ||
               fatal "failed to run iptables command to create $custom chain due to $out" ;;
        *) fatal "failed to check for the existence of chain $custom (exit $rc): $out" ;;
        esac
        ensure_jump "$builtin" "$custom"
    done
}

save_and_restore() {
    saved=$(iptables-save -t filter 2>&1) || { echo "kube-router: E: iptables-save: $saved"; return; }
    printf '%s\n' "$saved" | iptables-restore -T filter 2>&1 ||
        echo "kube-router: E: iptables-restore failed"
}

ensure_top_level_chains
echo "kube-router: started: top-level chains in place"
systemd-notify --ready --status="kube-router: policy sync every ${SYNC}s" &
syncs=0
while sleep "$SYNC"; do
    ensure_top_level_chains
    save_and_restore
    syncs=$((syncs + 1))
    echo "kube-router: sync $syncs done"
done
