"""Can the iptables-nft inside k3s read the kernel's rules? And if not, fix what we can.

analyser: pure model of iptables-nft 1.8.9's reader; equivalents + repair: exact
iptables encodings and the one-transaction rewrite; iptables: a real binary as
second opinion; probe: all of it in one call. See docs/compat.md."""
