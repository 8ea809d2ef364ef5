"""Command-line behaviour: listing, usage errors, exit codes."""

from __future__ import annotations

import pytest

from compress.cli import EXIT_USER_ERROR, main
from compress.registry import REGISTRIES
from tests.conftest import SCHEDULES


def test_list_shows_every_registered_component(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    for kind, reg in REGISTRIES.items():
        assert f"{kind}:" in out
        for entry in reg:
            assert entry.name in out


def test_list_one_kind(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list", "quantizers"]) == 0
    out = capsys.readouterr().out
    assert "post_train_linear" in out and "perplexity" not in out


def test_list_unknown_kind_suggests(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list", "quantizer"]) == EXIT_USER_ERROR
    assert "Did you mean 'quantizers'" in capsys.readouterr().err


def test_no_schedule_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == EXIT_USER_ERROR
    assert "give a schedule file" in capsys.readouterr().err


def test_bad_thread_count(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(SCHEDULES / "perf_rnn.yaml"), "--threads", "0"]) == EXIT_USER_ERROR
    assert "--threads" in capsys.readouterr().err
