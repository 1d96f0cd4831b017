"""The shipped shell completion offers exactly the commands and options of fwgate/cli.py.

bash: the real completion function under bash-completion's framework; zsh: the
completion file's per-command option lists (and its syntax, with zsh -n)."""
import argparse
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from fwgate.cli import COMMANDS, _parser

ROOT = Path(__file__).resolve().parents[2]
BASH = ROOT / "packaging" / "completion" / "fwgate.bash"
ZSH = ROOT / "packaging" / "completion" / "_fwgate"
FRAMEWORK = Path("/usr/share/bash-completion/bash_completion")


def cli_options() -> dict[str, set[str]]:
    """{command: its long options}, "" for the top level."""
    parser = _parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    longs = lambda p: {o for a in p._actions for o in a.option_strings if o.startswith("--")}
    return {"": longs(parser), **{name: longs(p) for name, p in sub.choices.items()}}


def bash_complete(*words: str) -> set[str]:
    quoted = " ".join(shlex.quote(w) for w in words)
    typed = shlex.quote("fwgate " + " ".join(words))  # what the user typed, cursor at its end
    script = f"""source {FRAMEWORK}; source {BASH}
        COMP_WORDS=(fwgate {quoted}); COMP_CWORD={len(words)}
        COMP_LINE={typed}; COMP_POINT=${{#COMP_LINE}}
        _fwgate fwgate {shlex.quote(words[-1])} {shlex.quote((["fwgate", *words])[-2])}
        printf '%s\\n' "${{COMPREPLY[@]}}" """
    out = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], capture_output=True,
                         text=True, timeout=30, check=True).stdout
    return set(out.split())


@pytest.mark.skipif(not FRAMEWORK.is_file(), reason="bash-completion missing (scripts/setup --test)")
def test_bash_completes_every_command_and_option():
    options = cli_options()
    assert bash_complete("") == set(COMMANDS)
    assert bash_complete("va") == {"validate-config"}
    assert bash_complete("--") == options[""]
    for command in COMMANDS:
        offered = bash_complete(command, "--")
        assert offered == options[command], command
        # Options before the command do not hide it.
        assert bash_complete("--netns", "x", command, "--") == offered


@pytest.mark.skipif(not shutil.which("zsh"), reason="zsh missing (scripts/setup --test)")
def test_zsh_completion_file_lists_every_command_and_option():
    subprocess.run(["zsh", "-n", str(ZSH)], check=True)
    text = ZSH.read_text()
    listed = set(re.findall(r"^\s+'([a-z-]+):", text, re.M))
    assert listed == set(COMMANDS)
    common = set(re.findall(r"'(?:\([^)]*\))?(--[a-z-]+)\[", text.split("commands=(")[0]))
    for command, opts in cli_options().items():
        if not command:
            continue
        arm = re.search(rf"^\s+(?:[a-z|-]+\|)?{re.escape(command)}(?:\|[a-z|-]+)?\) (.*)$", text, re.M)
        offered = common | set(re.findall(r"--[a-z-]+(?=\[)", arm[1] if arm else ""))
        offered |= {"--json"} if arm and "$json" in arm[1] else set()
        assert offered == opts, command
