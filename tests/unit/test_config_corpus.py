"""Bad configs: exit 78, one line naming the key path and line, never a traceback."""
import os
import subprocess
import sys

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from fwgate.config import parse_config
from fwgate.errors import ConfigError

BAD = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "config", "bad")

# file → what its one-line error must say
EXPECTED = {
    "unknown-key.yaml": "setle: unknown key (known: settle, timeout",
    "wrong-type-settle.yaml": "settle: expected a single value (line 1)",
    "bad-duration.yaml": "timeout: '5 fortnights': unknown time unit 'fortnights' (line 1)",
    "negative-duration.yaml": "settle: '-5s' is not a time span",
    "empty-stages.yaml": "stages: expected at least one stage (line 1)",
    "stage-without-conditions.yaml": "stages[0]: a stage needs at least one of unit:, link:, rules: (line 2)",
    "unknown-family.yaml": "watch[0]: unknown family 'ipv4'",
    "chain-missing-part.yaml": 'stages[0].rules[0].chain: expected a chain as "FAMILY TABLE CHAIN" (line 4)',
    "bad-interface.yaml": "stages[0].link: expected an interface name (line 3)",
    "bad-unit.yaml": "stages[0].unit: expected a systemd unit name",
    "bad-policy.yaml": "compat.on_incompatible: expected one of: fail, warn, repair (line 2)",
    "relative-iptables.yaml": "compat.iptables: expected auto, none or an absolute path (line 2)",
    "top-level-list.yaml": "expected a mapping of keys (line 1)",
    "anchors.yaml": "stages[1]: YAML anchors and aliases are not supported",
    "billion-laughs.yaml": "a: unknown key",
    "watch-bomb.yaml": "compat: YAML anchors and aliases are not supported",
    "tabs.yaml": "not valid YAML",
    "duplicate-key.yaml": "settle: duplicate key (line 2)",
    "duplicate-stage.yaml": "stages[1].name: stage name 'a' is used twice",
    "python-tag.yaml": "settle: unsupported YAML tag !!python/object/apply:os.system (line 1)",
    "bad-metrics.yaml": "metrics.textfile: expected auto, none or an absolute path ending in .prom (line 2)",
    "bad-after-ready.yaml": "after_ready.mode: expected one of: exit, watch (line 2)",
    "iifname-on-table.yaml": "stages[0].rules[0]: iifname/oifname go with chain:, not table: (line 4)",
    "binary-junk.yaml": "not UTF-8 text (byte 14)",
    "not-a-mapping.yaml": "expected a mapping of keys (line 1)",
}


def validate(path: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fwgate", "validate-config", path],
                          capture_output=True, text=True, timeout=60)


def test_every_bad_file_has_an_expectation():
    assert sorted(os.listdir(BAD)) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_config_is_refused_in_one_line(name):
    path = os.path.join(BAD, name)
    result = validate(path)
    assert result.returncode == 78, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"fwgate: {path}: ")
    assert EXPECTED[name] in lines[0]
    assert result.stdout == ""


def test_ten_megabyte_file(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("settle: 5s\n" + "# padding\n" * (1 << 20))
    result = validate(str(path))
    assert result.returncode == 78 and "larger than 1024 KiB" in result.stderr


def test_config_writable_by_others(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the ownership rule applies when fwgate runs as root")
    path = tmp_path / "fwgate.yaml"
    path.write_text("settle: 5s\n")
    os.chmod(path, 0o646)
    result = validate(str(path))
    assert result.returncode == 78 and "writable by others than root" in result.stderr
    os.chown(path, 65534, 0)
    os.chmod(path, 0o644)
    assert "owner uid 65534" in validate(str(path)).stderr


# -- fuzzing: whatever the YAML, the answer is a Config or a ConfigError ------------

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=True), st.text(max_size=20),
                    st.sampled_from(["5s", "0", "wt0", "ip netbird", "ip filter FORWARD",
                                     "netbird.service", "repair", "watch", "none", "/x.prom"]))
keys = st.sampled_from(["settle", "timeout", "on_timeout", "watch", "stages", "compat", "name",
                        "unit", "link", "rules", "table", "chain", "iifname", "oifname",
                        "on_incompatible", "iptables", "after_ready", "mode", "metrics",
                        "textfile", "restart_after_repair", "restart_interval", "bogus"])
documents = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5)), max_leaves=25)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_fuzzed_configs_never_crash(doc):
    text = yaml.safe_dump(doc)
    try:
        parse_config(text, "fuzz.yaml")
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("fuzz.yaml")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzzed_bytes_never_crash(blob):
    try:
        parse_config(blob.decode("utf-8", "replace"), "fuzz.yaml")
    except ConfigError as exc:
        assert "\n" not in str(exc)
