"""Smoke test of the comparison benchmarks: ``python benchmarks/run.py --quick`` writes every section.

Checks structure and that the figures are numbers, never timing values (the machine is shared).
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

BENCHMARKS = ROOT / "benchmarks"
SECTIONS = (
    "## Benchmarks against the alternatives",
    "## Accuracy vs PyTorch dynamic int8",
    "## Weight bytes",
    "## Evaluation speed",
    "## Study wall time",
    "## Calibration memory vs data size",
    "## Scaling",
)
NUMBER = r"[-+]?\d[\d,]*(?:\.\d+)?"


def _section(text: str, heading: str) -> str:
    start = text.index(heading + "\n")
    end = text.find("\n## ", start + len(heading))
    return text[start : None if end < 0 else end]


def _row(section: str, label: str) -> list[str]:
    """The cells of the first table row whose first cell is ``label``."""
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == label:
            return cells
    raise AssertionError(f"no table row '{label}' in:\n{section}")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Run the quick benchmark once into a results file that already holds another engineer's section."""
    path = tmp_path_factory.mktemp("bench") / "RESULTS.md"
    path.write_text("# Benchmark results\n\n## Someone else's section\n\nkeep me\n", encoding="utf-8")
    cmd = [sys.executable, str(BENCHMARKS / "run.py"), "--quick", "--results", str(path)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return path.read_text(encoding="utf-8")


def test_every_section_is_written_and_other_sections_are_kept(results: str) -> None:
    for heading in SECTIONS:
        assert re.search(rf"^{re.escape(heading)}$", results, re.M), heading
    assert "## Someone else's section\n\nkeep me" in results
    if (BENCHMARKS / "integer_path.py").exists():  # run.py collects the integer-path benchmark's section too
        assert re.search(r"^## Integer execution( \(.+\))?$", results, re.M) or "integer_path.py`: skipped" in results
    assert "torch.set_num_threads(" in _section(results, SECTIONS[0])


def test_accuracy_has_a_number_for_compress_and_for_pytorch(results: str) -> None:
    section = _section(results, SECTIONS[1])
    assert "### Performance RNN" in section and "### Word LM" in section
    for label in ("fp32 nn.LSTM", "`int8_full`", "torch dynamic int8", "compress W8 weights only"):
        cells = _row(section, label)
        assert re.fullmatch(NUMBER, cells[2]), cells  # perplexity
        assert re.fullmatch(r"[-+]\d+\.\d\d%", cells[3]), cells  # delta vs fp32
    assert _row(section, "fp32 nn.LSTM")[3] == "+0.00%"
    assert "deprecated" in section  # quantize_dynamic's warning is reported


def test_weight_bytes_and_speed_ratios_are_numbers(results: str) -> None:
    weights = _section(results, SECTIONS[2])
    for label in ("fp32 nn.LSTM", "compress `int8_full`", "torch dynamic int8"):
        assert re.fullmatch(r"\d+", _row(weights, label)[1])
    speed = _section(results, SECTIONS[3])
    for label in ("fp32 nn.LSTM", "compress fp32 modular", "compress int8_full", "torch dynamic int8"):
        assert re.fullmatch(r"\*\*\d+\.\d\dx\*\*", _row(speed, label)[3])
    assert _row(speed, "fp32 nn.LSTM")[3] == "**1.00x**"


def test_study_memory_and_scaling_tables(results: str) -> None:
    study = _section(results, SECTIONS[4])
    for stage in ("build", "convert", "stats", "quantize", "evaluate", "layer_report"):
        assert re.fullmatch(NUMBER, _row(study, stage)[1])
    memory = _section(results, SECTIONS[5])
    for size in ("1x", "4x", "16x"):
        assert re.fullmatch(NUMBER, _row(memory, size)[4])  # peak growth after 1x
    assert "Flat" in memory or "Not flat" in memory
    scaling = _section(results, SECTIONS[6])
    for size in ("1x", "2x", "4x"):
        assert re.fullmatch(NUMBER, _row(scaling, size)[3])  # growth factor of calibration
    assert "hidden^" in scaling


def test_replace_sections_keeps_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from benchutil import replace_sections

    text = "# R\n\n## Scaling of x\nother\n\n## Scaling\nold\n\n## Tail\nt\n"
    out = replace_sections(text, {"## Scaling": "new", "## Added": "a"})
    assert out == "# R\n\n## Scaling of x\nother\n\n## Scaling\n\nnew\n\n## Tail\nt\n\n## Added\n\na\n"


def test_fused_rnn_benchmark_runs_and_checks_exactness() -> None:
    cmd = [sys.executable, str(BENCHMARKS / "fused_rnn.py"), "--hidden", "12", "--steps", "5", "--batch", "3"]
    proc = subprocess.run([*cmd, "--rounds", "1"], cwd=BENCHMARKS, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("int8 output equal to the per-op emulation (torch.equal): True.") == 2
    for kind in ("LSTM", "GRU"):
        section = proc.stdout[proc.stdout.index(f"### {kind}") :]
        assert re.fullmatch(rf"\*\*{NUMBER}\*\*", _row(section, "compress int8")[2])
