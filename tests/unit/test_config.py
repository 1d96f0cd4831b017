import os

import pytest

from fwgate.config import (
    ChainExists, LinkUp, TableExists, UnitActive, defaults, load_config, parse_config,
)
from fwgate.model import TableRef
from fwgate.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def test_shipped_file_is_the_default_and_matches_the_design():
    DEFAULTS = defaults()
    shipped = load_config(os.path.join(ROOT, "config", "fwgate.yaml"))
    assert shipped.stages == DEFAULTS.stages
    assert (DEFAULTS.settle, DEFAULTS.timeout, DEFAULTS.on_timeout) == (5.0, 300.0, "proceed")
    assert [str(t) for t in DEFAULTS.watch] == ["ip netbird", "ip6 netbird", "ip filter", "ip6 filter"]
    assert [s.name for s in DEFAULTS.stages] == ["netbird", "tunnel", "rules"]
    assert DEFAULTS.stages[0].conditions == (UnitActive("netbird.service"),)
    assert DEFAULTS.stages[1].conditions == (LinkUp("wt0"),)
    assert DEFAULTS.stages[2].conditions == (
        TableExists(TableRef("ip", "netbird")),
        ChainExists(TableRef("ip", "filter"), "FORWARD", iifname="wt0", if_exists=True))
    assert (DEFAULTS.compat.on_incompatible, DEFAULTS.compat.iptables) == ("repair", "auto")
    assert DEFAULTS.after_ready.mode == "exit"  # the guard unit guards


def test_empty_file_means_defaults():
    assert parse_config("", "x").stages == defaults().stages


def test_if_exists_goes_with_a_chain_and_a_rule():
    config = parse_config("stages:\n  - name: r\n    rules:\n      - chain: ip filter FORWARD\n"
                          "        oifname: wt0\n        if_exists: true\n", "x")
    assert config.stages[0].conditions[0].if_exists
    for text, key in (("      - table: ip filter\n        if_exists: true\n", "rules[0].if_exists"),
                      ("      - chain: ip filter FORWARD\n        if_exists: true\n",
                       "rules[0].if_exists"),
                      ("      - chain: ip filter FORWARD\n        iifname: wt0\n"
                       "        if_exists: maybe\n", "rules[0].if_exists")):
        with pytest.raises(ConfigError, match=r"stages\[0\]\." + key.replace("[", r"\[")
                           .replace("]", r"\]")):
            parse_config("stages:\n  - name: r\n    rules:\n" + text, "x")


def test_overrides_and_stage_options():
    config = parse_config("""
settle: 500ms
timeout: 0
on_timeout: fail
watch: [ip netbird]
stages:
  - name: up
    link: [wt0, wt1]
    settle: 2s
    timeout: 1min
  - name: rules
    rules:
      - chain: ip filter INPUT
        oifname: wt0
compat:
  on_incompatible: repair
  iptables: /usr/sbin/iptables
""")
    assert config.settle == 0.5 and config.timeout == 0 and config.on_timeout == "fail"
    assert config.watch == (TableRef("ip", "netbird"),)
    assert config.stages[0].conditions == (LinkUp("wt0"), LinkUp("wt1"))
    assert (config.stages[0].settle, config.stages[0].timeout) == (2.0, 60.0)
    assert config.stage_settle(config.stages[1]) == 0.5
    assert config.stages[1].conditions == (ChainExists(TableRef("ip", "filter"), "INPUT", oifname="wt0"),)
    assert config.compat.on_incompatible == "repair"
    assert config.tables_of_interest() == (TableRef("ip", "netbird"), TableRef("ip", "filter"))


@pytest.mark.parametrize("text,message", [
    ("settle: 5x", "settle: '5x': unknown time unit 'x' (line 1)"),
    ("bogus: 1", "bogus: unknown key"),
    ("stages:\n  - name: a\n    link: 'bad name'\n", "stages[0].link: expected an interface name (line 3)"),
    ("stages: []", "stages: expected at least one stage (line 1)"),
    ("stages:\n  - name: a\n", "stages[0]: a stage needs at least one of unit:, link:, rules: (line 2)"),
    ("stages:\n  - link: wt0\n", "stages[0]: a stage needs a name: (line 2)"),
    ("watch:\n  - ipx filter\n", "watch[0]: unknown family 'ipx'"),
    ("on_timeout: maybe", "on_timeout: expected one of: proceed, fail (line 1)"),
    ("stages:\n  - name: a\n    rules:\n      - table: ip t\n        iifname: wt0\n",
     "stages[0].rules[0]: iifname/oifname go with chain:, not table: (line 4)"),
    ("compat:\n  iptables: iptables\n", "compat.iptables: expected auto, none or an absolute path (line 2)"),
    ("a: &x [1]\nb: *x\n", "unknown key"),
    ("watch: &w [ip a]\nstages:\n  - name: s\n    rules:\n      - table: ip a\n    link: *w\n",
     "anchors and aliases are not supported"),
    ("settle: [", "not valid YAML"),
    ("- 1\n- 2\n", "expected a mapping of keys (line 1)"),
    ("stages:\n  - name: a\n    link: wt0\n  - name: a\n    link: wt1\n", "stage name 'a' is used twice"),
])
def test_bad_config_names_key_path_and_line(text, message):
    with pytest.raises(ConfigError) as err:
        parse_config(text, "t.yaml")
    assert message in str(err.value)
    assert "\n" not in str(err.value)
    assert str(err.value).startswith("t.yaml: ")


def test_file_writable_by_others_is_refused(tmp_path):
    path = tmp_path / "fwgate.yaml"
    path.write_text("settle: 1s\n")
    os.chmod(path, 0o666)
    if os.geteuid() != 0:
        pytest.skip("the ownership rule applies when fwgate runs as root")
    with pytest.raises(ConfigError, match="writable by others than root"):
        load_config(str(path))
    os.chmod(path, 0o644)
    assert load_config(str(path)).settle == 1.0


def test_missing_binary_and_huge_files(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(str(tmp_path / "nope.yaml"))
    junk = tmp_path / "junk.yaml"
    junk.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(str(junk))
    big = tmp_path / "big.yaml"
    big.write_text("#" * (2 << 20))
    with pytest.raises(ConfigError, match="larger than"):
        load_config(str(big))
