"""Fine-tuning on the tiny word LM: steps 0 is the post-training model, seeded runs agree, a killed run resumes,
the frozen model's artifact, kernels and emulation agree bit for bit, and the report describes the new grids."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from compress import stages
from compress.errors import DataError, ModelError
from compress.finetune import finetune_experiment
from compress.quant import load_quantized, save_quantized
from compress.schedule import load_schedule
from tests.conftest import ROOT

SCHEDULE = ROOT / "tests" / "schedules_tiny" / "word_lm_qat_tiny.yaml"


@dataclass
class Study:
    model: nn.Module
    data: Any
    stats: Any
    qspec: dict[str, Any]
    batch: Any

    def quantizer(self, model: nn.Module | None = None) -> Any:
        return stages.make_quantizer(self.qspec, self.model if model is None else model, self.stats)

    def finetune(self, block: dict[str, Any], out: Path | None = None, **kw: Any) -> Any:
        return finetune_experiment(
            block,
            float_model=self.model,
            qmodel=self.quantizer().prepare_model().eval(),
            requantize=self.quantizer,
            data=self.data,
            name="int8_full_qat",
            identity=self.qspec,
            out_dir=out,
            **kw,
        )


@pytest.fixture(scope="module")
def study() -> Study:
    schedule = load_schedule(SCHEDULE)
    cpu = torch.device("cpu")
    model, data = stages.build_model(schedule, cpu), stages.build_data(schedule)
    model, _ = stages.convert(schedule, model, data)
    stats = stages.collect_stats(schedule, schedule.data["stats"], ("stats",), model, data, cpu, False)
    exp = next(e for e in schedule.data["experiments"] if e["name"] == "int8_full_qat")
    return Study(model, data, stats, stages.experiment_quantizer(schedule, exp), stages.first_batch(data, "evaluation"))


def _logits(model: nn.Module, batch: Any) -> torch.Tensor:
    with torch.no_grad():
        return model.forward_batch(batch, None)[0]


def _same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_zero_steps_reproduces_the_post_training_model_exactly(study: Study) -> None:
    ptq = study.quantizer().prepare_model().eval()
    tuned = study.finetune({"steps": 0})
    assert tuned.model is not ptq and _same_state(tuned.model, ptq)  # thawed and frozen again, not passed through
    assert torch.equal(_logits(tuned.model, study.batch), _logits(ptq, study.batch))
    assert tuned.summary["steps"] == 0


def test_fine_tuning_is_deterministic_for_a_seed_and_changes_the_integer_weights(study: Study) -> None:
    a = study.finetune({"steps": 3, "lr": 1e-3, "seed": 5})
    b = study.finetune({"steps": 3, "lr": 1e-3, "seed": 5})
    c = study.finetune({"steps": 3, "lr": 1e-3, "seed": 6})
    ptq = study.quantizer().prepare_model()
    assert _same_state(a.model, b.model)
    assert torch.equal(_logits(a.model, study.batch), _logits(b.model, study.batch))
    assert not _same_state(a.model, ptq) and not _same_state(a.model, c.model)
    assert all(p.grad is None for p in study.model.parameters())  # the study's float model is untouched


def test_a_killed_run_resumes_from_the_saved_weights(study: Study, tmp_path: Path) -> None:
    block = {"steps": 5, "lr": 1e-3, "save_every": 2}
    whole = study.finetune(block, tmp_path / "whole")

    class Killed(Exception):
        pass

    def kill_at_3(done: int) -> None:
        if done == 3:
            raise Killed

    (tmp_path / "killed").mkdir()
    (tmp_path / "whole").mkdir(exist_ok=True)
    with pytest.raises(Killed):
        study.finetune(block, tmp_path / "killed", on_step=kill_at_3)
    saved = torch.load(tmp_path / "killed" / "int8_full_qat.finetune.pt", weights_only=True)
    assert saved["step"] == 2  # the last periodic save before the kill
    resumed = study.finetune(block, tmp_path / "killed")
    assert resumed.summary["resumed_from_step"] == 2 and "resumed from step 2" in resumed.notes[0]
    assert _same_state(resumed.model, whole.model)
    again = study.finetune(block, tmp_path / "killed")  # finished: only frozen again from the saved weights
    assert again.summary["resumed_from_step"] == 5 and _same_state(again.model, whole.model)
    other = study.finetune({**block, "lr": 2e-3}, tmp_path / "killed")  # other settings: starts over
    assert other.summary["resumed_from_step"] == 0


def test_fine_tuned_artifact_kernels_and_emulation_agree_bit_for_bit(study: Study, tmp_path: Path) -> None:
    tuned = study.finetune({"steps": 2, "lr": 1e-3})
    path = tmp_path / "qat.qpt"
    save_quantized(tuned.model, path)
    simulated = _logits(tuned.model, study.batch)
    for kernels in ("auto", "off"):  # integer kernels (and fused loops) / the float64 emulation
        assert torch.equal(_logits(load_quantized(path, integer_kernels=kernels), study.batch), simulated), kernels
    emulated = stages.make_quantizer(
        {**study.qspec, "args": {**study.qspec["args"], "integer_kernels": "off"}}, tuned.quantizer.model, study.stats
    )
    assert torch.equal(_logits(emulated.prepare_model().eval(), study.batch), simulated)


def test_the_layer_report_describes_the_fine_tuned_grids(study: Study) -> None:
    tuned = study.finetune({"steps": 2, "lr": 1e-2})
    run = lambda m: stages.torch.no_grad()(m.score_batch)(study.batch, None)  # noqa: E731
    rows = {r["module"]: r for r in tuned.quantizer.layer_records(run)}
    before = {r["module"]: r for r in study.quantizer().layer_records(run)}
    name = "rnn.cells.0.fc_gate_h"
    qweight = tuned.model.get_submodule(name).qweight
    assert rows[name]["weight_scale"] == float(qweight.scale.median())
    assert rows[name]["weight_scale"] != before[name]["weight_scale"]
    assert rows[name]["output_scale"] == before[name]["output_scale"]  # activation grids: the calibrated ones


class _NoTraining(nn.Module):
    pass


def test_a_model_or_dataset_without_training_support_is_named(study: Study) -> None:
    with pytest.raises(ModelError, match=r"\(_NoTraining\) has no method training_loss\(batch, state\)"):
        finetune_experiment(
            {"steps": 1},
            float_model=_NoTraining(),
            qmodel=_NoTraining(),
            requantize=study.quantizer,
            data=study.data,
            name="x",
        )
    with pytest.raises(DataError, match=r"the dataset \(object\) has no method training_batches"):
        finetune_experiment(
            {"steps": 1},
            float_model=study.model,
            qmodel=study.model,
            requantize=study.quantizer,
            data=object(),
            name="x",
        )


def test_training_streams_resume_at_any_step(study: Study) -> None:
    stream = study.data.training_batches(4, 3, 0)
    first = [next(stream) for _ in range(40)]  # more than one pass over the tiny split
    later = study.data.training_batches(4, 3, 37)
    for want in first[37:]:
        got = next(later)
        assert all(torch.equal(a, b) for a, b in zip(want, got, strict=True))
    assert first[0][0].shape == (35, 4)


def test_a_finetune_block_on_the_float_model_or_with_a_typo_is_a_schedule_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from compress.cli import main

    text = SCHEDULE.read_text().replace(
        "  - name: fp32\n    quantizer: null\n",
        "  - name: fp32\n    quantizer: null\n    finetune: {steps: 1, lr_rate: 0.1}\n",
    )
    path = tmp_path / "bad.yaml"
    path.write_text(text.replace("../fixtures/", str(SCHEDULE.parent.parent / "fixtures") + "/"))
    assert main([str(path), "--plan", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "experiments[0].finetune" in err and "quantizer: null" in err and "lr_rate" in err
    assert "Traceback" not in err
