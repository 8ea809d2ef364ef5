"""The README's Quick start is what CI runs, and says what a new user needs in the block itself."""

from __future__ import annotations

import subprocess

from tests.conftest import ROOT


def quick_start_block() -> list[str]:
    lines = (ROOT / "README.md").read_text().split("## Quick start", 1)[1].splitlines()
    start = lines.index("```bash") + 1
    return lines[start : lines.index("```", start)]


def test_quick_start_sets_up_a_venv_with_torch_then_runs_the_study_and_the_tests() -> None:
    setup, study, tests = quick_start_block()
    assert setup.startswith("python -m venv .venv && . .venv/bin/activate && pip install torch==")
    assert setup.index("pip install torch") < setup.index('pip install -e ".[dev]"')  # torch before compress
    assert study == "python -m compress schedules/perf_rnn.yaml" and tests == "pytest"


def test_ci_runs_exactly_the_quick_start_block() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    extract = next(line for line in script.splitlines() if line.startswith("awk "))
    cmd = extract.split(" > ")[0]
    got = subprocess.run(["bash", "-c", cmd], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert got.splitlines() == quick_start_block()
    assert script.rstrip().endswith('bash -euo pipefail "$block"')
