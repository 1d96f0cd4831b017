"""Modules the machine names at the top of its files but loads at first use. Pure.

The compat reader and the mark model take about 100 ms to import (more on a busy
node); the machine needs them only at its first compat run or the first rule it
judges, and the gate's first snapshot must not wait on them. So they are imported by
name at the top, where a reader sees them, and their code runs at the first attribute
read (importlib.util.LazyLoader). The executor loads them while the first quiet window
runs (fwgate.daemon's warm-up)."""
from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def deferred(name: str) -> ModuleType:
    """The module `name`, its code run at the first attribute read (at once if it is
    loaded already)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ImportError(f"no module named {name!r}")
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    parent, _, child = name.rpartition(".")
    if parent:  # as an import would: `import a.b` then `a.b.x` works
        setattr(sys.modules[parent], child, module)
    return module


def load(module: ModuleType) -> ModuleType:
    """Run a deferred module's code now (a no-op for one loaded already)."""
    getattr(module, "__name__")
    return module
