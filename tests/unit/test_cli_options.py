"""The command line becomes one frozen options value per command, each value under the
name it keeps down to where it acts."""
from __future__ import annotations

import dataclasses

import pytest

from fwgate.cli import (
    OPTIONS, CheckOptions, CompatOptions, ConflictsOptions, ServeOptions, ValidateOptions,
    _parser, options_of,
)


def parsed(*argv: str):
    return options_of(_parser().parse_args(list(argv)))


def test_every_command_has_its_frozen_options():
    assert set(OPTIONS) == set(_parser()._subparsers._group_actions[0].choices)
    for kind in OPTIONS.values():
        with pytest.raises(dataclasses.FrozenInstanceError):
            kind().netns = "x"


def test_common_options_before_or_after_the_command():
    assert parsed("--config", "/a.yaml", "--netns", "n1", "check", "--json") == \
        CheckOptions(config_path="/a.yaml", netns="n1", json=True)
    assert parsed("check", "--config", "/b.yaml") == CheckOptions(config_path="/b.yaml")
    # given after the command, not reset by the top level's default
    assert parsed("--netns", "n1", "check", "--config", "/b.yaml").netns == "n1"


def test_run_watch_is_keep_guarding_and_left_to_the_config_otherwise():
    assert parsed("run", "--watch") == ServeOptions(keep_guarding=True)
    assert parsed("run").keep_guarding is None
    assert parsed("guard") == ServeOptions()


def test_command_options():
    assert parsed("compat", "--iptables", "/usr/sbin/iptables-nft", "--verify") == \
        CompatOptions(iptables="/usr/sbin/iptables-nft", verify=True)
    assert parsed("conflicts", "--all") == ConflictsOptions(show_shared=True)
    assert parsed("validate-config", "/c.yaml", "--quiet") == \
        ValidateOptions(path="/c.yaml", quiet=True)
    assert parsed("repair", "--dry-run").dry_run is True
    assert parsed("demo").settle == "3s"


def test_the_config_source_reads_again_and_keeps_the_last_good_file(tmp_path, monkeypatch):
    """A reload reads the file again; the guard falls back to the last good copy of it."""
    from fwgate.adapters.configfile import ConfigSource
    from fwgate.config import ConfigError
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    (tmp_path / "state").mkdir()
    path = tmp_path / "fwgate.yaml"
    path.write_text("settle: 2s\n")
    source = ConfigSource(str(path))
    assert source.reload().settle == 2.0
    path.write_text("settle: 3s\n")
    assert source.load().settle == 3.0
    path.write_text("settle: [\n")
    with pytest.raises(ConfigError):
        source.reload()
    said = []
    config, problem = source.load_for_guard(said.append)
    assert config.settle == 2.0 and problem and said and "guarding with" in said[0]
