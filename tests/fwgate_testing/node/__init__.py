"""A real systemd in a throw-away nspawn container: the rootfs, the container, the .deb
builds and the local apt archives, and the Netbird + k3s stand-in nodes of the e2e and
lifecycle tests."""
