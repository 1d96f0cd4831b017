"""What the tests (and bench/) share: namespaces and processes (helpers), captured dumps,
real iptables builds of several versions, the differential generator, rulesets as the
components write them, hand-built rules, and the real-systemd node (node/).

tests/conftest.py registers `plugin` (the shared fixtures) with pytest_plugins; pyproject's
`pythonpath = ["tests"]` makes the package importable; bench/ puts tests/ on its path.
"""
