"""The layers hold: what decides imports nothing that does I/O.

Each pure module is imported alone in a fresh interpreter; afterwards no socket,
subprocess, selector, netlink library, D-Bus binding, YAML parser or fwgate
adapter may be loaded, directly or through anything it imports."""
from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import fwgate

# Pure: every module of these packages, and these modules.
PURE_PACKAGES = ("fwgate.netlink.", "fwgate.core.", "fwgate.compat.", "fwgate.marks.")
PURE_MODULES = {"fwgate.errors", "fwgate.timespan", "fwgate.model", "fwgate.config",
                "fwgate.state", "fwgate.netbird", "fwgate.report", "fwgate.health"}
# The edges, which may do I/O: the adapters, and these.
EDGES = {"fwgate.__main__", "fwgate.cli", "fwgate.daemon", "fwgate.demo", "fwgate.programmer"}
FORBIDDEN = ("socket", "_socket", "select", "selectors", "subprocess", "pyroute2", "pystemd",
             "yaml", "sdnotify", "fwgate.adapters", "fwgate.daemon", "fwgate.cli")
PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(sys.modules)))
"""


def modules() -> set[str]:
    return {m.name for m in pkgutil.walk_packages(fwgate.__path__, "fwgate.") if not m.ispkg}


def pure_modules() -> list[str]:
    return sorted(m for m in modules() if m not in EDGES and
                  (m in PURE_MODULES or m.startswith(PURE_PACKAGES)))


def loaded_by(module: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", PROBE, module], capture_output=True, text=True,
                         check=True, timeout=60)
    return set(json.loads(out.stdout))


def test_pure_modules_import_no_io():
    baseline = loaded_by("json")  # what the interpreter loads anyway
    pure = pure_modules()
    assert len(pure) >= 25, pure
    for module in pure:
        extra = loaded_by(module) - baseline
        bad = sorted(m for m in extra
                     if m in FORBIDDEN or m.startswith(tuple(f"{f}." for f in FORBIDDEN)))
        assert not bad, f"{module} pulls in {bad}"


def test_no_pure_package_holds_an_edge():
    """The compat probe's I/O lives in fwgate.adapters.probe: every module of the pure
    packages is fenced, none is let off as an edge."""
    assert not [m for m in EDGES if m.startswith(PURE_PACKAGES)]
    assert {"fwgate.compat.probe", "fwgate.core.machine", "fwgate.core.retry"} <= \
        set(pure_modules())


def test_every_module_is_placed():
    """A new module is pure or an edge, on purpose."""
    unplaced = sorted(m for m in modules() if m not in EDGES and m not in pure_modules()
                      and not m.startswith("fwgate.adapters."))
    assert not unplaced, unplaced


def test_tests_share_helpers_through_the_plugin_package_only():
    """Shared test code lives in tests/fwgate_testing: no test module imports another
    test module or bench/, or touches sys.path."""
    import ast
    import pathlib
    tests = pathlib.Path(__file__).resolve().parents[1]
    bad = []
    for path in sorted(tests.rglob("test_*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            bad += [f"{path.relative_to(tests)}: imports {n}" for n in names
                    if n.split(".")[0].startswith("test_") or n.split(".")[0] == "bench"]
            if isinstance(node, ast.Attribute) and node.attr == "path" and \
                    isinstance(node.value, ast.Name) and node.value.id == "sys":
                bad.append(f"{path.relative_to(tests)}:{node.lineno}: uses sys.path")
    assert not bad, "\n".join(bad)
