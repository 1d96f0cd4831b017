"""The shipped alert rules speak of metrics fwgate writes (promtool tests what they
do: tests/systemd/test_packaging.py)."""
import re
from pathlib import Path

import yaml

from fwgate.state import State, render_metrics

RULES = Path(__file__).resolve().parents[2] / "packaging" / "prometheus" / "fwgate-alerts.yml"
# The guard's newest metrics, written on the main line as these rules were: once
# render_metrics has them, this set must be emptied (the test then checks them too).
PENDING = {"fwgate_prevention_in_force", "fwgate_heartbeat_timestamp_seconds", "fwgate_config_ok"}


def test_every_metric_in_the_rules_is_one_fwgate_writes():
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    used = {m for r in rules for m in re.findall(r"\bfwgate_[a-z_]+", r["expr"])}
    written = set(re.findall(r"^# TYPE (fwgate_\w+) (\w+)", render_metrics(
        State(pid=1, netns=None, role="guard")), re.M))
    names = {name + ("_total" if kind == "counter" and not name.endswith("_total") else "")
             for name, kind in written}
    assert used - PENDING <= names, sorted(used - PENDING - names)
    assert not PENDING & names, f"render_metrics writes {sorted(PENDING & names)}: empty PENDING"
    # Every alert has a severity and says what to do.
    for r in rules:
        assert r["labels"]["severity"] in ("critical", "warning", "info"), r["alert"]
        assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]
