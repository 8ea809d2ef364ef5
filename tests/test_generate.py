"""``python -m compress generate``: deterministic MIDI from the tiny artifact, bad arguments exit 2."""

from __future__ import annotations

from pathlib import Path

import mido
import pytest

import compress
from compress.cli import EXIT_USER_ERROR, main


def _notes(path: Path) -> int:
    return sum(1 for m in mido.MidiFile(path) if m.type == "note_on" and m.velocity > 0)


def test_generate_end_to_end(tiny_rollout_study, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    artifact = tiny_rollout_study[1] / "int8_full.qpt"
    runs = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        out = tmp_path / f"{name}.mid"
        assert main(["generate", str(artifact), "--steps", "150", "--seed", str(seed), "--out", str(out)]) == 0
        runs[name] = out.read_bytes()
        assert _notes(out) > 0
    assert runs["a"] == runs["b"] != runs["c"]
    assert "ms/step (batch 1)" in capsys.readouterr().out
    info = compress.generate(artifact, steps=150, seed=7, out=tmp_path / "api.mid")
    assert (tmp_path / "api.mid").read_bytes() == runs["a"] and info["items"] == _notes(tmp_path / "a.mid")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["MISSING", "--steps", "5"], "Cannot read artifact"),
        (["CORRUPT", "--steps", "5"], "cannot be read: it is truncated, damaged or not an artifact"),
        (["ARTIFACT", "--steps", "0"], "--steps must be a whole number of at least 1, got 0"),
        (["ARTIFACT", "--steps", "5", "--temperature", "0"], "--temperature must be a positive number"),
        (["ARTIFACT", "--steps", "5", "--out", "OUT.txt"], "generates music (MIDI); write a .mid file"),
        (["ARTIFACT", "--steps", "5", "--out", "NOFOLDER/x.mid"], "does not exist; create it"),
    ],
)
def test_bad_arguments_exit_2(
    args: list[str], message: str, tiny_rollout_study, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    artifact = tiny_rollout_study[1] / "int8_full.qpt"
    (tmp_path / "corrupt.qpt").write_bytes(artifact.read_bytes()[:2000])
    subs = {
        "MISSING": str(tmp_path / "missing.qpt"),
        "CORRUPT": str(tmp_path / "corrupt.qpt"),
        "ARTIFACT": str(artifact),
        "OUT.txt": str(tmp_path / "o.txt"),
        "NOFOLDER": str(tmp_path / "nope"),
    }
    argv = [subs.get(a, a.replace("NOFOLDER", subs["NOFOLDER"])) for a in args]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "o.mid")]
    assert main(["generate", *argv]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o.mid").exists() and not (tmp_path / "o.txt").exists()


def test_a_missing_required_option_is_an_argparse_error(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "x.qpt"])
    assert exit_info.value.code == EXIT_USER_ERROR and "--steps" in capsys.readouterr().err


def test_generate_text_from_a_word_lm_artifact(tmp_path: Path) -> None:
    from compress import engine
    from compress.schedule import load_schedule
    from tests.conftest import FIXTURES, ROOT

    schedule = load_schedule(ROOT / "tests" / "schedules_tiny" / "word_lm_tiny.yaml")
    schedule.data["experiments"] = [e for e in schedule.data["experiments"] if e["name"] == "int8_full"]
    engine.run(schedule, out_dir=tmp_path, progress=False)
    vocab = ["--vocab", str(FIXTURES / "word_lm_tiny.pt")]
    for name in ("a", "b"):
        argv = ["generate", str(tmp_path / "int8_full.qpt"), "--steps", "40", "--seed", "2", "--quiet"]
        assert main([*argv, "--out", str(tmp_path / f"{name}.txt"), *vocab]) == 0
    text = (tmp_path / "a.txt").read_text()
    assert len(text.split()) == 40 and text == (tmp_path / "b.txt").read_text()
