"""bench/results.md is rendered from the recorded JSON (and results/notes.md, by hand):
what is in it must come back when it is rendered again, or a later run drops it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_results_md_is_what_the_recorded_results_render(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text((ROOT / "bench" / "README.md").read_text())
    subprocess.run([sys.executable, str(ROOT / "bench" / "report.py"),
                    "--out", str(tmp_path / "results.md"), "--readme", str(readme)],
                   check=True, capture_output=True, cwd=ROOT)
    assert (tmp_path / "results.md").read_text() == \
        (ROOT / "bench" / "results.md").read_text(), \
        "bench/results.md differs from bench/report.py's rendering: write by hand in " \
        "bench/results/notes.md, then run bench/report.py"
    assert readme.read_text() == (ROOT / "bench" / "README.md").read_text()
