"""The shipped alert rules speak of metrics fwgate writes (promtool tests what they
do: tests/systemd/test_packaging.py)."""
import re
from pathlib import Path

import yaml

from fwgate.state import State, render_metrics

RULES = Path(__file__).resolve().parents[2] / "packaging" / "prometheus" / "fwgate-alerts.yml"


def test_every_metric_in_the_rules_is_one_fwgate_writes():
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    used = {m for r in rules for m in re.findall(r"\bfwgate_[a-z_]+", r["expr"])}
    # prevention is set once the guard has asked: then its metric is written.
    written = set(re.findall(r"^# TYPE (fwgate_\w+) (\w+)", render_metrics(State(
        pid=1, netns=None, role="guard", prevention={"in_force": True, "state": "x"})), re.M))
    names = {name + ("_total" if kind == "counter" and not name.endswith("_total") else "")
             for name, kind in written}
    assert used <= names, sorted(used - names)
    # Every alert has a severity and says what to do.
    for r in rules:
        assert r["labels"]["severity"] in ("critical", "warning", "info"), r["alert"]
        assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]
