"""The rollout evaluator: zero against itself, positive and reproducible when quantized, hand-checked pieces."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from compress.errors import CompressError, ModelError
from compress.evaluate.rollout import evaluate_rollout, first_difference, pitch_class_tv, step_kl
from compress.models.autoregressive import pick, sample
from compress.models.performance_rnn import PerformanceRNN
from compress.models.word_lm import WordLM
from compress.modules import convert_rnns
from compress.quant import load_quantized
from compress.registry import EVALUATORS, MODELS
from tests.conftest import FIXTURES, ROLLOUT_TINY


def _tiny(name: str = "perf_rnn_tiny.pt") -> torch.nn.Module:
    return MODELS.get("performance_rnn").obj(checkpoint=FIXTURES / name)


@pytest.mark.parametrize("fixture", ["perf_rnn_tiny.pt", "perf_rnn_gru_tiny.pt"])
def test_a_model_against_itself_has_zero_kl_and_never_diverges(fixture: str) -> None:
    model = _tiny(fixture)
    r = evaluate_rollout(model, None, reference=model, **ROLLOUT_TINY)
    m = r["metrics"]
    assert r["metric"] == "rollout" and r["value"] == 0.0 and r["higher_is_better"] is False
    assert m["rollout_kl_first"] == m["rollout_kl_last"] == m["rollout_hidden_err"] == 0.0
    assert m["rollout_first_diff"] == ROLLOUT_TINY["steps"] and m["rollout_never_diverged"] == 1.0
    assert m["rollout_pitch_tv"] == 0.0


def test_the_word_lm_implements_the_protocol_too() -> None:
    torch.manual_seed(0)
    model = WordLM(30, 8, 8, 2).eval()
    converted, _ = convert_rnns(copy.deepcopy(model))
    r = evaluate_rollout(converted.eval(), None, reference=model, sequences=3, steps=12, window=4)
    assert "rollout_pitch_tv" not in r["metrics"]  # music only
    assert r["value"] < 1e-9 and r["metrics"]["rollout_hidden_err"] < 1e-5  # the conversion is float-exact


def test_the_engine_passes_the_float_model(tiny_rollout_study) -> None:
    result, _ = tiny_rollout_study
    rows = {e.name: e for e in result.experiments}
    assert rows["fp32"].value == 0.0 and rows["fp32"].metrics["rollout_never_diverged"] == 1.0
    assert rows["int8_full"].metric == "rollout" and rows["int8_full"].value > 0.0


def test_a_quantized_model_has_positive_reproducible_kl(tiny_rollout_study) -> None:
    result, out = tiny_rollout_study
    float_model, _ = convert_rnns(_tiny())
    qmodel = load_quantized(out / "int8_full.qpt")
    a = evaluate_rollout(qmodel, None, reference=float_model.eval(), **ROLLOUT_TINY)
    b = evaluate_rollout(qmodel, None, reference=float_model.eval(), **ROLLOUT_TINY)
    assert a == b
    m = a["metrics"]
    assert 0.0 < m["rollout_kl_first"] and 0.0 < m["rollout_kl_last"] and 0.0 < m["rollout_hidden_err"] < 1.0
    assert 0 <= m["rollout_first_diff"] < ROLLOUT_TINY["steps"] and 0.0 < m["rollout_pitch_tv"] <= 1.0
    # The artifact computes the bits of the model the engine evaluated.
    assert a["metrics"] == {k: v for k, v in result.experiments[1].metrics.items()}
    other = evaluate_rollout(qmodel, None, reference=float_model.eval(), **{**ROLLOUT_TINY, "seed": 1})
    assert other["value"] != a["value"]


def test_first_difference_on_a_hand_built_case() -> None:
    a = torch.tensor([[5, 5, 5, 5], [6, 6, 6, 6], [7, 7, 7, 7]])
    b = torch.tensor([[5, 0, 5, 5], [6, 6, 0, 6], [7, 7, 7, 0]])
    assert first_difference(a, b).tolist() == [3, 0, 1, 2]  # 3 = never differs within the 3 steps
    assert first_difference(a, a).tolist() == [3, 3, 3, 3]


def test_step_kl_and_pitch_tv_by_hand() -> None:
    p = torch.tensor([[math.log(0.5), math.log(0.5)]], dtype=torch.float64)
    q = torch.tensor([[math.log(0.25), math.log(0.75)]], dtype=torch.float64)
    want = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert step_kl(p, q).item() == pytest.approx(want, abs=1e-15)
    # note_on 39 is pitch 60 (C), 46 is 67 (G); other events do not count
    assert pitch_class_tv(torch.tensor([39, 39, 200]), torch.tensor([39, 46, 100])) == 0.5
    assert pitch_class_tv(torch.tensor([39]), torch.tensor([51])) == 0.0  # C4 and C5: same pitch class


def test_pick_is_the_inverse_cdf_of_the_shared_uniform() -> None:
    logits = torch.log(torch.tensor([[0.2, 0.3, 0.5]])).expand(4, 3)
    assert pick(logits, torch.tensor([0.1, 0.25, 0.6, 0.99])).tolist() == [[0, 1, 2, 2]]


def test_sampling_is_seeded() -> None:
    model = _tiny()
    a, b, c = sample(model, 2, 30, seed=4), sample(model, 2, 30, seed=4), sample(model, 2, 30, seed=5)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_models_without_the_protocol_get_a_clear_error() -> None:
    fn = EVALUATORS.get("rollout").obj
    with pytest.raises(ModelError, match=r"lacks generates, rollout_init, rollout_step, rollout_hidden"):
        fn(torch.nn.Linear(2, 2), None, reference=torch.nn.Linear(2, 2))
    with pytest.raises(CompressError, match="float model"):
        fn(PerformanceRNN(hidden_dim=4, num_layers=1), None)


def test_rollout_as_a_second_evaluator_beside_perplexity(tmp_path) -> None:
    """``also_evaluate``: perplexity stays the main metric; rollout's numbers join every row as extras."""
    import json

    from compress import engine, report
    from compress.schedule import load_schedule
    from tests.conftest import ROLLOUT_TINY, ROOT

    schedule = load_schedule(ROOT / "tests" / "schedules_tiny" / "perf_rnn_tiny.yaml")
    schedule.data["also_evaluate"] = [{"name": "rollout", "args": ROLLOUT_TINY}]
    schedule.data["experiments"] = [e for e in schedule.data["experiments"] if e["name"] in ("fp32", "int8_full")]
    schedule.data.pop("render", None)
    result = engine.run(schedule, out_dir=tmp_path, progress=False)
    report.write_report(result, tmp_path)
    rows = {e.name: e for e in result.experiments}
    assert {e.metric for e in result.experiments} == {"perplexity"}
    assert rows["fp32"].metrics["rollout"] == 0.0 and rows["fp32"].metrics["rollout_never_diverged"] == 1.0
    assert rows["int8_full"].metrics["rollout"] > 0.0
    assert "rollout_kl_last" in rows["int8_full"].extra_metrics
    assert "rollout_kl_last" in (tmp_path / "report.md").read_text()
    saved = {e["name"]: e for e in json.loads((tmp_path / "report.json").read_text())["experiments"]}
    assert saved["int8_full"]["metrics"]["rollout"] == rows["int8_full"].metrics["rollout"]


def test_an_unknown_second_evaluator_is_a_schedule_error(tmp_path, capsys) -> None:
    import yaml

    from compress.cli import main
    from tests.conftest import ROOT

    data = yaml.safe_load((ROOT / "tests" / "schedules_tiny" / "perf_rnn_tiny.yaml").read_text())
    data["also_evaluate"] = [{"name": "rollut"}]
    data["model"]["checkpoint"] = str(ROOT / "tests" / "fixtures" / "perf_rnn_tiny.pt")
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main([str(path), "--plan", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "also_evaluate" in err and "rollut" in err and "Traceback" not in err
