"""Every malformed schedule in tests/schedules_bad/ gives exit code 2, the right line and YAML path, no traceback.

Each file starts with a header ``# expect: line=N path=P contains=TEXT`` written next to the mistake
it holds, so the corpus documents itself.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from compress.cli import EXIT_USER_ERROR, main
from compress.schedule import Schedule, overrides_path

BAD = Path(__file__).parent / "schedules_bad"
CASES = sorted(BAD.glob("*.yaml"))
MIN_CORPUS = 25


def expectation(path: Path) -> tuple[int, str, str]:
    header = path.read_bytes().split(b"\n", 1)[0].decode("utf-8")  # some files are not UTF-8 after line 1
    m = re.match(r"# expect: line=(\d+) path=(\S*) contains=(.*)$", header)
    assert m, f"{path.name} lacks its '# expect:' header"
    return int(m.group(1)), m.group(2), m.group(3)


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= MIN_CORPUS


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_bad_schedule_is_reported(path: Path, capsys: pytest.CaptureFixture[str], plugin_path: Path) -> None:
    line, yaml_path, contains = expectation(path)
    rc = main([str(path), "--plan", "--quiet"])
    err = capsys.readouterr().err
    assert rc == EXIT_USER_ERROR, err
    assert "Traceback" not in err
    assert f"{path.name}:{line}:" in err, err
    if yaml_path:
        assert f": {yaml_path}:" in err, err
    assert contains.lower() in err.lower(), err


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    text = (
        (BAD / "typo_quantizer_arg.yaml")
        .read_text()
        .replace("seed: 0", "seed: -1")
        .replace("device: cpu", "device: tpu")
    )
    bad = tmp_path / "many.yaml"
    bad.write_text(text)
    proc = subprocess.run([sys.executable, "-m", "compress", str(bad), "--plan"], capture_output=True, text=True)
    assert proc.returncode == EXIT_USER_ERROR
    assert "3 problems" in proc.stderr
    assert all(k in proc.stderr for k in ("seed", "device", "bits_activation"))
    assert "Traceback" not in proc.stderr


def test_debug_flag_shows_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "compress", str(BAD / "wrong_version.yaml"), "--debug"], capture_output=True, text=True
    )
    assert proc.returncode == EXIT_USER_ERROR
    assert "Traceback" in proc.stderr


def test_missing_schedule_file() -> None:
    proc = subprocess.run([sys.executable, "-m", "compress", "no/such/file.yaml"], capture_output=True, text=True)
    assert proc.returncode == EXIT_USER_ERROR
    assert "no such schedule file" in proc.stderr and "Traceback" not in proc.stderr


RULE = [{"match": "x", "fp16": True}]


@pytest.mark.parametrize(
    ("base", "experiment", "expected"),
    [
        ({"overrides": RULE}, {}, ("quantizer", "overrides")),
        ({"overrides": RULE}, {"overrides": RULE}, ("experiments", 0, "overrides")),
        ({"overrides": RULE}, {"overrides": []}, None),  # an empty list replaces the base rules
        ({"args": {"overrides": RULE}}, {}, ("quantizer", "args", "overrides")),
        ({"args": {"overrides": RULE}}, {"args": {"overrides": RULE}}, ("experiments", 0, "args", "overrides")),
        ({"overrides": RULE}, {"args": {"overrides": RULE}}, ("quantizer", "overrides")),  # a list wins over args
        (
            {"overrides": RULE},
            {"quantizer": {"name": "q", "overrides": RULE}},
            ("experiments", 0, "quantizer", "overrides"),
        ),
        ({"overrides": RULE}, {"quantizer": {"name": "q"}}, None),
    ],
)
def test_overrides_path_names_the_list_the_quantizer_gets(base: dict, experiment: dict, expected: tuple | None) -> None:
    schedule = Schedule({"quantizer": {"name": "q", **base}, "experiments": [experiment]}, Path("s.yaml"))
    assert overrides_path(schedule, 0) == expected
