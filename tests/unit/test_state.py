from prometheus_client.parser import text_string_to_metric_families

from fwgate.state import State, read_state, render_metrics, write_atomically


def test_metrics_parse_and_carry_the_numbers():
    state = State(pid=1, netns=None, ready_at=1700000000.5, status="ready",
                  stage_seconds={"tunnel": 1.25, 'we"ird': 2.0}, incompatible=["x"],
                  repairs_total=3, resyncs_total=2, changes_total=9, last_change_at=1700000000.0)
    families = {f.name: f for f in text_string_to_metric_families(render_metrics(state))}
    value = {s.name: s.value for f in families.values() for s in f.samples if not s.labels}
    assert value["fwgate_ready"] == 1 and value["fwgate_degraded"] == 1
    assert value["fwgate_ready_timestamp_seconds"] == 1700000000.5
    assert value["fwgate_incompatible_rules"] == 1 and value["fwgate_repairs_total"] == 3
    assert value["fwgate_resyncs_total"] == 2 and value["fwgate_rule_changes_total"] == 9
    stages = {s.labels["stage"]: s.value for s in families["fwgate_stage_duration_seconds"].samples}
    assert stages == {"tunnel": 1.25, 'we"ird': 2.0}
    assert families["fwgate_repairs"].type == "counter"


def test_not_ready_has_no_ready_timestamp():
    text = render_metrics(State(pid=1, netns=None))
    assert "fwgate_ready 0" in text and "ready_timestamp" not in text


def test_state_round_trips_and_keeps_the_latest_repairs(tmp_path):
    state = State(pid=42, netns="ns")
    for i in range(30):
        state.note_repair(float(i), [f"rule {i}"])
    path = str(tmp_path / "sub" / "state.json")
    write_atomically(path, state.to_json())
    back = read_state(path)
    assert back.repairs_total == 30 and len(back.repairs) == State.MAX_KEPT
    assert back.repairs[-1]["rule"] == "rule 29" and back.netns == "ns"
    assert read_state(str(tmp_path / "missing.json")) is None
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["state.json"]  # no temp left


def test_only_a_crashed_unit_is_restarted():
    from fwgate.adapters.manager import crashed
    assert crashed("failed", "failed")
    assert crashed("activating", "auto-restart")
    assert not crashed("activating", "start")  # merely starting: leave it alone
    assert not crashed("active", "running") and not crashed("inactive", "dead")
