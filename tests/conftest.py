"""The test helpers (tests/fwgate_testing, on the path by pyproject's `pythonpath`) as a
pytest plugin: its fixtures serve every tier."""
pytest_plugins = ["fwgate_testing.plugin"]
