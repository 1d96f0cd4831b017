"""The state file and the metrics textfile: atomic writes, reads, where they live."""
from __future__ import annotations

import json
import os
import tempfile

from ..config import METRICS_AUTO, METRICS_AUTO_DIR
from ..state import State, render_metrics

DEFAULT_RUNTIME_DIR = "/run/fwgate"


def state_path(netns: str | None = None, role: str = "gate") -> str:
    """systemd's RuntimeDirectory= sets $RUNTIME_DIRECTORY; one file per role and namespace."""
    directory = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0] or DEFAULT_RUNTIME_DIR
    name = "state" if role == "gate" else f"state-{role}"
    return os.path.join(directory, f"{name}-{netns}.json" if netns else f"{name}.json")


def last_good_path() -> str | None:
    """Where the guard keeps the last config file that parsed: systemd's StateDirectory=
    ($STATE_DIRECTORY); None outside systemd (nothing is kept)."""
    directory = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return os.path.join(directory, "last-good.yaml") if directory else None


def keep_last_good(source: str) -> None:
    """Copy a config file that parsed, for a later start with a broken one."""
    kept = last_good_path()
    if kept is None or not source.startswith("/") or source == kept:
        return
    try:
        with open(source, encoding="utf-8") as fh:
            write_atomically(kept, fh.read(), 0o600)
    except OSError:
        pass  # only a fallback: the running config is what counts


def metrics_path(textfile: str | None, role: str = "gate") -> str | None:
    """The gate writes metrics.textfile; the guard writes NAME-guard.prom beside it, so
    node_exporter's textfile collector reads both. auto: fwgate.prom in node_exporter's
    textfile directory (written only while that directory exists: StateWriter)."""
    if textfile == METRICS_AUTO:
        textfile = os.path.join(METRICS_AUTO_DIR, "fwgate.prom")
    if textfile is None or role == "gate":
        return textfile
    stem = textfile.removesuffix(".prom")
    return f"{stem}-{role}.prom"


def write_atomically(path: str, text: str, mode: int = 0o644) -> None:
    """Readers see the old file or the new one, never half of one."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".fwgate-", dir=directory)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def read_state(path: str) -> State | None:
    try:
        with open(path) as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return None
    known = State.__dataclass_fields__
    return State(**{k: v for k, v in data.items() if k in known})


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StateWriter:
    """Writes the state file and the metrics textfile (either may be None: off);
    a failure is said once, then carried on with."""

    def __init__(self, state_file: str | None, metrics_file: str | None, warn,
                 metrics_if_dir: bool = False) -> None:
        self.state_file, self.metrics_file, self.warn = state_file, metrics_file, warn
        # metrics.textfile: auto. Checked at every write, so metrics start flowing
        # once node_exporter is installed, with no restart; never creates the directory.
        self.metrics_if_dir = metrics_if_dir
        self.warned = False

    def save(self, state: State) -> None:
        try:
            if self.state_file:
                write_atomically(self.state_file, state.to_json())
            if self.metrics_file and (not self.metrics_if_dir
                                      or os.path.isdir(os.path.dirname(self.metrics_file))):
                write_atomically(self.metrics_file, render_metrics(state))
        except OSError as exc:
            if not self.warned:
                self.warn(f"cannot write {exc.filename}: {exc.strerror}")
                self.warned = True
