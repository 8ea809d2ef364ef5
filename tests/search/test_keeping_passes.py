"""The whole-split weight-keeping passes repeat while the loss falls and the target is still missed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from compress.search import search


def test_passes_repeat_while_the_loss_falls_and_stop_when_it_does_not(monkeypatch: pytest.MonkeyPatch) -> None:
    losses = iter([0.6, 0.55, 0.55, 0.1])  # the third pass gains nothing: no fourth
    calls = []

    def fake_fallback(session, config, now, order, batches, rungs):  # noqa: ANN001, ANN202
        calls.append(config)
        return config + (len(calls),), SimpleNamespace(loss=next(losses), met=False)

    monkeypatch.setattr(search, "fallback", fake_fallback)
    session = SimpleNamespace(stopped="")
    config, now = search._keeping_passes(session, (0,), SimpleNamespace(loss=0.7, met=False), [0])
    assert len(calls) == 3 and now.loss == 0.55 and config == (0, 1, 2, 3)


def test_passes_stop_once_the_target_is_met(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_fallback(session, config, now, order, batches, rungs):  # noqa: ANN001, ANN202
        calls.append(1)
        return config, SimpleNamespace(loss=0.1, met=True)

    monkeypatch.setattr(search, "fallback", fake_fallback)
    search._keeping_passes(SimpleNamespace(stopped=""), (0,), SimpleNamespace(loss=0.7, met=False), [0])
    assert len(calls) == 1
