"""The old tool's mapping form of overrides is read as the ordered rule list it means."""

from __future__ import annotations

from pathlib import Path

import pytest

from compress.cli import EXIT_USER_ERROR, main
from compress.legacy import rewrite_mapping_overrides
from compress.schedule import load_schedule, parse_yaml

BAD = Path(__file__).parent / "schedules_bad"

TEXT = """\
quantizer:
  name: post_train_linear
  overrides:
    .*eltwise.*: {fp16: true}
    output_fc: {bits_activations: 16}
experiments:
  - name: a
    args:
      overrides:
        event_embedding:
"""


def test_mapping_becomes_the_ordered_list_with_the_keys_lines() -> None:
    data, marks = parse_yaml(TEXT, "s.yaml")
    assert rewrite_mapping_overrides(data, marks) == []
    assert data["quantizer"]["overrides"] == [
        {"match": ".*eltwise.*", "fp16": True},
        {"match": "output_fc", "bits_activations": 16},
    ]
    assert data["experiments"][0]["args"]["overrides"] == [{"match": "event_embedding"}]
    assert marks[("quantizer", "overrides", 1, "match")] == (5, 5)
    assert marks[("quantizer", "overrides", 1, "bits_activations")] == (5, 35)  # the value, as any other path


def test_a_mapping_that_is_not_rules_gets_one_message_with_the_list_form(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([str(BAD / "overrides_mapping_not_settings.yaml"), "--plan"]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "1 problem." in err and err.count("quantizer.overrides") == 1, err
    assert "- {match: '.*eltwise.*', fp16: true}" in err and "- {match: 'event_embedding'" in err


def test_the_mapping_form_runs_as_the_list(tmp_path: Path) -> None:
    text = (BAD / "overrides_mapping_typo.yaml").read_text().replace("fp61", "fp16")
    path = tmp_path / "s.yaml"
    path.write_text(text.replace("../fixtures/", str(BAD.parent / "fixtures") + "/"))
    rules = load_schedule(path).data["quantizer"]["overrides"]
    assert rules == [{"match": ".*eltwise.*", "fp16": True}, {"match": "event_embedding", "fp16": True}]
