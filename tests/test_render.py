"""The render block: generations of the float model and listed experiments, same seeds, linked from report.md."""

from __future__ import annotations

from pathlib import Path

import mido
import pytest

from compress.cli import EXIT_USER_ERROR, main
from compress.models.word_lm import WordLM
from compress.render import render_model
from tests.conftest import ROOT


def test_render_writes_midi_for_float_and_listed_experiments(tiny_rollout_study) -> None:
    result, out = tiny_rollout_study
    assert result.renders == {
        "float": ["render-float-0.mid", "render-float-1.mid"],
        "int8_full": ["render-int8_full-0.mid", "render-int8_full-1.mid"],
    }
    report = (out / "report.md").read_text()
    for files in result.renders.values():
        for name in files:
            notes = [m for m in mido.MidiFile(out / name) if m.type == "note_on" and m.velocity > 0]
            assert notes, name
            assert f"[{name}]({name})" in report
    # same seeds, same draws: the two float sequences differ from each other, not run to run
    assert (out / "render-float-0.mid").read_bytes() != (out / "render-float-1.mid").read_bytes()


def test_word_lm_renders_text(tmp_path: Path) -> None:
    model = WordLM(4, 4, 4, 1).eval()
    model.vocab = ["<unk>", "the", "cat", "sat"]
    names = render_model({"sequences": 2, "steps": 25}, "float", model, tmp_path, default_seed=3)
    text = (tmp_path / names[0]).read_text()
    assert names == ["render-float-0.txt", "render-float-1.txt"]
    assert len(text.split()) == 25 and set(text.split()) <= set(model.vocab) and text.count("\n") == 2


def test_render_of_an_unknown_experiment_is_a_schedule_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    text = (ROOT / "tests" / "schedules_tiny" / "perf_rnn_tiny.yaml").read_text()
    bad = tmp_path / "s.yaml"
    text = text.replace("../fixtures/", str(ROOT / "tests" / "fixtures") + "/")
    bad.write_text(text + "render:\n  experiments: [int9]\n")
    assert main([str(bad), "--plan"]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "render.experiments[0]" in err and "no experiment is named 'int9'" in err and "Traceback" not in err
