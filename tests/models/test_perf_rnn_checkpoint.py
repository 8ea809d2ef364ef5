"""Performance RNN checkpoints: our format, public .sess files, errors, the shipped files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from compress.errors import ModelError
from compress.models.performance_rnn import SHIPPED_CHECKPOINT, PerformanceRNN, save_checkpoint
from compress.registry import MODELS

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "fixtures" / "perf_rnn_tiny.pt"
TINY_GRU = ROOT / "tests" / "fixtures" / "perf_rnn_gru_tiny.pt"
SHIPPED_GRU = SHIPPED_CHECKPOINT.with_name("perf_rnn_gru.pt")
# Re-scoring on another machine or BLAS can move the mean NLL in the 6th decimal; 1e-3 nats
# is far below any effect a quantization study looks at, and far above float noise.
METRIC_TOLERANCE = 1e-3


def _factory(**kwargs):
    return MODELS.get("performance_rnn").obj(**kwargs)


def _batch(size: int = 2):
    g = torch.Generator().manual_seed(0)
    return (
        torch.randint(240, (9, size), generator=g),
        torch.rand(9, size, 24, generator=g),
        torch.randn(size, 32, generator=g),
    )


def _sess(model: PerformanceRNN, path: Path) -> Path:
    config = {
        "init_dim": model.init_dim,
        "event_dim": model.event_dim,
        "control_dim": model.control_dim,
        "hidden_dim": model.hidden_dim,
        "gru_layers": model.num_layers,
        "gru_dropout": model.dropout,
    }
    state = {"model_config": config, "model_state": model.state_dict(), "model_optimizer_state": {"state": {}}}
    torch.save(state, path)
    return path


def test_own_format_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = PerformanceRNN(hidden_dim=12, num_layers=2, cell="gru", dropout=0.2).eval()
    save_checkpoint(model, tmp_path / "m.pt", {"note": "test"})
    raw = torch.load(tmp_path / "m.pt", weights_only=True)
    assert raw["format"] == "compress-checkpoint" and raw["version"] == 1 and raw["card"] == {"note": "test"}
    loaded = _factory(checkpoint=tmp_path / "m.pt")
    assert not loaded.training and loaded.arch_args() == model.arch_args()
    assert torch.equal(loaded.forward_batch(_batch())[0], model.forward_batch(_batch())[0])
    assert loaded.compress_spec == {"model": "performance_rnn", "args": model.arch_args()}
    rebuilt = _factory(**loaded.compress_spec["args"])
    assert rebuilt.state_dict().keys() == loaded.state_dict().keys()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_public_sess_format(tmp_path: Path, cell: str) -> None:
    torch.manual_seed(1)
    model = PerformanceRNN(hidden_dim=10, num_layers=3, cell=cell, dropout=0.3).eval()
    loaded = _factory(checkpoint=str(_sess(model, tmp_path / "model.sess")))
    assert loaded.cell == cell and loaded.num_layers == 3 and loaded.hidden_dim == 10
    assert loaded.score_batch(_batch(4))[0]["all"][0] == model.score_batch(_batch(4))[0]["all"][0]


def test_checkpoint_config_decides_and_disagreement_is_an_error(tmp_path: Path) -> None:
    path = _sess(PerformanceRNN(hidden_dim=10, num_layers=2), tmp_path / "model.sess")
    assert _factory(checkpoint=path, hidden_dim=10, cell="lstm").hidden_dim == 10  # agreeing args are fine
    with pytest.raises(ModelError, match=r"hidden_dim=512 \(checkpoint: 10\)"):
        _factory(checkpoint=path, hidden_dim=512)
    with pytest.raises(ModelError, match="cell='gru'"):
        _factory(checkpoint=path, cell="gru")


def test_plain_state_dict_uses_the_given_args(tmp_path: Path) -> None:
    model = PerformanceRNN(hidden_dim=6, num_layers=1)
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    assert _factory(checkpoint=tmp_path / "sd.pt", hidden_dim=6, num_layers=1).hidden_dim == 6
    with pytest.raises(ModelError, match="does not fit"):
        _factory(checkpoint=tmp_path / "sd.pt")  # defaults (512 x 3) do not fit


def test_loading_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="missing.pt"):
        _factory(checkpoint=tmp_path / "missing.pt")
    torch.save(PerformanceRNN(hidden_dim=4, num_layers=1), tmp_path / "pickled_module.pt")
    with pytest.raises(ModelError, match="holds Python objects or code") as info:
        _factory(checkpoint=tmp_path / "pickled_module.pt")
    assert "weights_only" not in str(info.value)  # never the advice to turn the safety off
    torch.save({"format": "compress-checkpoint", "version": 2, "model": "performance_rnn"}, tmp_path / "v2.pt")
    with pytest.raises(ModelError, match="version 2"):
        _factory(checkpoint=tmp_path / "v2.pt")
    torch.save({"format": "compress-checkpoint", "version": 1, "model": "word_lm"}, tmp_path / "lm.pt")
    with pytest.raises(ModelError, match="word_lm"):
        _factory(checkpoint=tmp_path / "lm.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ModelError, match="not a Performance RNN checkpoint"):
        _factory(checkpoint=tmp_path / "list.pt")
    bad_gates = {"model_config": {"hidden_dim": 4}, "model_state": {"gru.weight_ih_l0": torch.zeros(8, 4)}}
    bad_gates["model_state"]["gru.weight_hh_l0"] = torch.zeros(8, 4)
    torch.save(bad_gates, tmp_path / "odd.sess")
    with pytest.raises(ModelError, match="gate blocks"):
        _factory(checkpoint=tmp_path / "odd.sess")
    with pytest.raises(ModelError, match="Unknown performance_rnn args"):
        _factory(hidden=4)
    with pytest.raises(ModelError, match="cell"):
        PerformanceRNN(cell="rnn")


def test_schema_is_strict() -> None:
    import jsonschema

    schema = MODELS.get("performance_rnn").schema
    jsonschema.validate({"hidden_dim": 256, "num_layers": 2, "cell": "gru", "dropout": 0.0}, schema)
    for bad in ({"hidden": 256}, {"cell": "rnn"}, {"num_layers": 0}, {"dropout": 1.0}, {"hidden_dim": "big"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def _recorded(path: Path) -> dict:
    card = torch.load(path, weights_only=True)["card"]
    return card


def _rescore(checkpoint: Path, evaluation: dict, split: str) -> dict[str, float]:
    from compress.registry import DATASETS

    model = _factory(checkpoint=checkpoint)
    args = {k: evaluation[k] for k in ("window", "batch_size", "seed", "max_files")}
    data = DATASETS.get("bach_chorales").obj(**args, evaluation_split=split, controls=True)
    sums: dict[str, list[float]] = {}
    for batch in data.batches("evaluation"):
        for name, (nll, count) in model.score_batch(batch)[0].items():
            acc = sums.setdefault(name, [0.0, 0])
            acc[0], acc[1] = acc[0] + nll, acc[1] + count
    return {name: s / c for name, (s, c) in sums.items()}


def _evaluation_args(card: dict) -> dict:
    args = card["args"]
    return {
        "window": args["eval_window"],
        "batch_size": args["eval_batch_size"],
        "seed": 0,
        "max_files": args["max_files"],
    }


@pytest.mark.parametrize("tiny", [TINY, TINY_GRU], ids=["lstm", "gru"])
def test_tiny_fixture_reaches_its_recorded_metric(tiny: Path) -> None:
    card = _recorded(tiny)
    assert tiny.stat().st_size < 1_000_000
    got = _rescore(tiny, _evaluation_args(card), "validation")
    want = card["metrics_fp32"]["validation"]
    assert got["all"] == pytest.approx(want["nll"], abs=METRIC_TOLERANCE)
    assert want["nll"] < card["metrics_untrained"]["validation"]["nll"] - 1.0


@pytest.mark.slow
@pytest.mark.parametrize("shipped", [SHIPPED_CHECKPOINT, SHIPPED_GRU], ids=["lstm", "gru"])
def test_shipped_checkpoint_reaches_its_recorded_metric(shipped: Path) -> None:
    recorded = json.loads(shipped.with_suffix(".json").read_text())
    assert shipped.stat().st_size < 10_000_000
    card = _recorded(shipped)
    assert card["metrics_fp32"] == recorded["metrics_fp32"]
    assert card["args"]["cell"] == shipped.stem.rsplit("_", 1)[1]  # perf_rnn_gru.pt holds a GRU
    for split in ("validation", "test"):
        got = _rescore(shipped, _evaluation_args(card), split)
        want = recorded["metrics_fp32"][split]
        assert got["all"] == pytest.approx(want["nll"], abs=METRIC_TOLERANCE)
        assert got["no_velocity"] == pytest.approx(want["nll_no_velocity"], abs=METRIC_TOLERANCE)
    assert recorded["metrics_fp32"]["validation"]["nll"] < 2.0 < recorded["metrics_untrained"]["validation"]["nll"]


def test_card_values_are_kept_loadable(tmp_path: Path) -> None:
    save_checkpoint(PerformanceRNN(hidden_dim=4, num_layers=1), tmp_path / "m.pt", {"torch": torch.__version__})
    card = torch.load(tmp_path / "m.pt", weights_only=True)["card"]
    assert card == {"torch": str(torch.__version__)} and type(card["torch"]) is str
