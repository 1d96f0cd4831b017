from prometheus_client.parser import text_string_to_metric_families

from fwgate.adapters.statefile import metrics_path, read_state, write_atomically
from fwgate.state import State, render_metrics


def test_metrics_parse_and_carry_the_numbers():
    state = State(pid=1, netns=None, ready_at=1700000000.5, status="ready",
                  stage_seconds={"tunnel": 1.25, 'we"ird': 2.0}, incompatible=["x"],
                  repairs_total=3, resyncs_total=2, changes_total=9, last_change_at=1700000000.0)
    families = {f.name: f for f in text_string_to_metric_families(render_metrics(state))}
    value = {s.name: s.value for f in families.values() for s in f.samples
             if s.labels == {"role": "gate"}}
    assert value["fwgate_ready"] == 1 and value["fwgate_degraded"] == 1
    assert value["fwgate_ready_timestamp_seconds"] == 1700000000.5
    assert value["fwgate_incompatible_rules"] == 1 and value["fwgate_repairs_total"] == 3
    assert value["fwgate_resyncs_total"] == 2 and value["fwgate_rule_changes_total"] == 9
    stages = {s.labels["stage"]: s.value for s in families["fwgate_stage_duration_seconds"].samples}
    assert stages == {"tunnel": 1.25, 'we"ird': 2.0}
    assert families["fwgate_repairs"].type == "counter"


def test_not_ready_has_no_ready_timestamp():
    text = render_metrics(State(pid=1, netns=None))
    assert 'fwgate_ready{role="gate"} 0' in text and "ready_timestamp" not in text


def test_the_guard_writes_its_own_metrics_file_beside_the_gate_one():
    assert metrics_path("/var/lib/node-exporter/fwgate.prom") == "/var/lib/node-exporter/fwgate.prom"
    assert metrics_path("/var/lib/node-exporter/fwgate.prom", "guard") == \
        "/var/lib/node-exporter/fwgate-guard.prom"
    assert metrics_path(None, "guard") is None
    text = render_metrics(State(pid=1, netns=None, role="guard", netbird_untagged_copies=4))
    assert 'fwgate_netbird_untagged_copies{role="guard"} 4' in text


def test_state_round_trips_and_keeps_the_latest_repairs(tmp_path):
    state = State(pid=42, netns="ns", repairs_total=30,
                  repairs=[{"at": float(i), "rule": f"rule {i}"} for i in range(10, 30)])
    path = str(tmp_path / "sub" / "state.json")
    write_atomically(path, state.to_json())
    back = read_state(path)
    assert back.repairs_total == 30 and len(back.repairs) == State.MAX_KEPT
    assert back.repairs[-1]["rule"] == "rule 29" and back.netns == "ns"
    assert read_state(str(tmp_path / "missing.json")) is None
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["state.json"]  # no temp left


def test_only_a_crashed_unit_is_restarted():
    from fwgate.adapters.systemd import crashed
    assert crashed("failed", "failed")
    assert crashed("activating", "auto-restart")
    assert not crashed("activating", "start")  # merely starting: leave it alone
    assert not crashed("active", "running") and not crashed("inactive", "dead")


def test_build_info_names_the_version():
    from fwgate import __version__
    text = render_metrics(State(pid=1, netns=None, role="guard", version="9.9.9"))
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert [(s.labels, s.value) for s in families["fwgate_build_info"].samples] == \
        [({"role": "guard", "version": "9.9.9"}, 1.0)]
    # A state from before versions were recorded: the running fwgate's own.
    assert f'fwgate_build_info{{role="gate",version="{__version__}"}} 1' in \
        render_metrics(State(pid=1, netns=None))


def test_metrics_auto_is_node_exporters_directory_and_never_created(tmp_path, monkeypatch):
    from fwgate.adapters import statefile
    assert metrics_path("auto") == "/var/lib/prometheus/node-exporter/fwgate.prom"
    assert metrics_path("auto", "guard") == "/var/lib/prometheus/node-exporter/fwgate-guard.prom"
    missing = tmp_path / "node-exporter" / "fwgate.prom"
    warnings = []
    writer = statefile.StateWriter(None, str(missing), warnings.append, metrics_if_dir=True)
    writer.save(State(pid=1, netns=None))
    assert not missing.parent.exists() and warnings == []
    missing.parent.mkdir()  # node_exporter installed: metrics flow, no restart
    writer.save(State(pid=1, netns=None))
    assert "fwgate_build_info" in missing.read_text()
    assert oct(missing.stat().st_mode & 0o777) == "0o644"  # node_exporter reads it as its user
