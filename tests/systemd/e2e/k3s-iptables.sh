#!/bin/sh
# Stand-in for k3s's bundled iptables (tests only), installed as
# /var/lib/rancher/k3s/data/e2e/bin/aux/{iptables,iptables-save,ip6tables,ip6tables-save}
# as after k3s's first run: xtables-nft-multi 1.8.9. Each call is logged with
# the caller's unit, so a test can see fwgate made it (journald cannot tell
# the unit of a logger process that has already exited).
tool=$(basename "$0")
logger -t k3s-iptables -- "$(sed -n 's|^0::.*/||p' /proc/self/cgroup): $tool $*"
exec /usr/sbin/xtables-nft-multi "$tool" "$@"
