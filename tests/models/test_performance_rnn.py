"""PerformanceRNN: layout, quirks, teacher-forced paths, scoring, generation."""

from __future__ import annotations

import copy
from pathlib import Path

import mido
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compress.data import events as encoding
from compress.data.midi import write_midi
from compress.models import performance_rnn as prnn
from compress.models.performance_rnn import PerformanceRNN

ATOL = 1e-6  # vectorized layers vs one-step-at-a-time calls of the same core, fp32


def _batch(steps: int = 12, size: int = 3, controls: bool = True, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    events = torch.randint(240, (steps, size), generator=g)
    ctrl = torch.rand(steps, size, 24, generator=g) if controls else None
    return events, ctrl, torch.randn(size, 32, generator=g)


def _model(cell: str = "lstm", hidden: int = 16, layers: int = 3, seed: int = 0, **kw) -> PerformanceRNN:
    torch.manual_seed(seed)
    return PerformanceRNN(hidden_dim=hidden, num_layers=layers, cell=cell, **kw).eval()


@pytest.mark.parametrize(("cell", "params"), [("lstm", 6_917_104), ("gru", 5_341_168)])
def test_seed_notebook_layout(cell: str, params: int) -> None:
    model = PerformanceRNN(cell=cell)
    names = [name for name, _ in model.named_children()]
    assert names == [
        "inithid_fc",
        "inithid_fc_activation",
        "event_embedding",
        "concat_input_fc",
        "concat_input_fc_activation",
        "gru",
        "output_fc",
        "output_fc_activation",
    ]
    assert (model.inithid_fc.in_features, model.inithid_fc.out_features) == (32, 1536)
    assert (model.concat_input_fc.in_features, model.concat_input_fc.out_features) == (265, 512)
    assert (model.output_fc.in_features, model.output_fc.out_features) == (1536, 240)
    assert isinstance(model.gru, nn.LSTM if cell == "lstm" else nn.GRU) and model.gru.num_layers == 3
    assert isinstance(model.concat_input_fc_activation, nn.LeakyReLU)
    assert not model.concat_input_fc_activation.inplace and model.concat_input_fc_activation.negative_slope == 0.1
    assert sum(p.numel() for p in model.parameters()) == params
    assert "gru.weight_ih_l2" in model.state_dict()


def test_velocity_range_matches_the_encoding() -> None:
    assert prnn.VELOCITY_EVENTS == (encoding.VELOCITY, encoding.VELOCITY + 32)
    assert prnn.STANDARD_EVENT_DIM == encoding.EVENT_DIM and PerformanceRNN().start_event == encoding.START_EVENT


@pytest.mark.parametrize("size", [1, 2, 5])
def test_initial_state_reproduces_the_view_quirk(size: int) -> None:
    model = _model(layers=3, hidden=4)
    z = torch.randn(size, 32)
    flat = torch.tanh(model.inithid_fc(z))  # [B, L*H]
    h0, c0 = model.init_state(z)
    for layer in range(3):
        for b in range(size):
            row, chunk = divmod(layer * size + b, 3)  # slot (l, b) reads chunk of a possibly different row
            assert torch.equal(h0[layer, b], flat[row, chunk * 4 : (chunk + 1) * 4])
    assert torch.equal(h0, c0)
    if size == 1:
        assert torch.equal(h0[:, 0], flat[0].view(3, 4))


class _Wrapped(nn.Module):
    """Stands in for a converted core: same call signature, not an nn.LSTM/GRU."""

    def __init__(self, core: nn.Module) -> None:
        super().__init__()
        self.core = core
        self.calls = 0

    def forward(self, x, state):
        self.calls += 1
        return self.core(x, state)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("controls", [True, False])
def test_vectorized_pass_equals_step_loop(cell: str, controls: bool) -> None:
    model = _model(cell)
    batch = _batch(controls=controls)
    fast, _ = model.forward_batch(batch)
    by_step = []
    state, inputs = model.init_state(batch[2]), torch.cat([torch.full((1, 3), 239), batch[0][:-1]])
    for t in range(inputs.shape[0]):
        ctrl = None if batch[1] is None else batch[1][t : t + 1]
        logits, state = model.step(inputs[t : t + 1], ctrl, state)
        by_step.append(logits[0])
    assert torch.allclose(fast, torch.stack(by_step), atol=ATOL)
    model.gru = _Wrapped(model.gru)
    looped, _ = model.forward_batch(batch)
    assert model.gru.calls == 12  # one core call per time step
    assert torch.allclose(fast, looped, atol=ATOL)


def test_hooks_on_the_core_force_the_step_loop() -> None:
    model = _model()
    calls = []
    model.gru.register_forward_hook(lambda *args: calls.append(1))
    model.forward_batch(_batch())
    assert len(calls) == 12


def test_training_mode_vectorized_matches_loop_without_dropout() -> None:
    model = _model(dropout=0.0).train()
    batch = _batch()
    fast, _ = model.forward_batch(batch)
    model.gru = _Wrapped(model.gru)
    assert torch.allclose(fast, model.forward_batch(batch)[0], atol=ATOL)


def test_teacher_forcing_shifts_inputs() -> None:
    model = _model()
    events, ctrl, z = _batch()
    base, _ = model.forward_batch((events, ctrl, z))
    last_changed = events.clone()
    last_changed[-1] = (last_changed[-1] + 1) % 240
    assert torch.equal(model.forward_batch((last_changed, ctrl, z))[0], base)  # the last event is only a target
    first_changed = events.clone()
    first_changed[0] = (first_changed[0] + 1) % 240
    changed, _ = model.forward_batch((first_changed, ctrl, z))
    assert torch.equal(changed[0], base[0]) and not torch.allclose(changed[1:], base[1:])


def test_score_batch_groups_and_state() -> None:
    model = _model()
    events, ctrl, z = _batch(steps=20, size=4)
    events[:5] = 180  # some velocity targets
    groups, state = model.score_batch((events, ctrl, z))
    logits, _ = model.forward_batch((events, ctrl, z))
    total = F.cross_entropy(logits.reshape(-1, 240).double(), events.reshape(-1), reduction="sum").item()
    assert groups["all"][0] == pytest.approx(total, rel=1e-6) and groups["all"][1] == 80
    keep = (events < 176) | (events >= 208)
    kept = F.cross_entropy(logits[keep].double(), events[keep], reduction="sum").item()
    assert groups["no_velocity"] == (pytest.approx(kept, rel=1e-6), int(keep.sum()))
    assert state is None  # windows with their own z are independent
    carried = model.score_batch((events, ctrl, None))[1]
    assert isinstance(carried, tuple) and carried[0].shape == (3, 4, 16) and not carried[0].requires_grad
    assert model.score_batch((events, ctrl, None), carried)[0]["all"][0] != groups["all"][0]


def test_score_batch_on_a_half_model() -> None:
    model = _model().half()
    groups, _ = model.score_batch(_batch())  # float32 controls and z are cast to the model's dtype
    reference, _ = _model().score_batch(_batch())
    assert groups["all"][1] == 36 and groups["all"][0] == pytest.approx(reference["all"][0], rel=1e-2)


def test_other_event_dims_have_only_the_all_group() -> None:
    model = PerformanceRNN(event_dim=50, hidden_dim=8, num_layers=1).eval()
    groups, _ = model.score_batch((torch.randint(50, (6, 2)), None, torch.zeros(2, 32)))
    assert sorted(groups) == ["all"]


def test_generate_argmax_and_sampling() -> None:
    model = _model()
    z = torch.randn(2, 32)
    greedy = model.generate(z, 15)
    assert greedy.shape == (15, 2) and greedy.dtype == torch.long and greedy.device.type == "cpu"
    assert torch.equal(greedy, model.generate(z, 15, generator=torch.Generator().manual_seed(9)))
    sampled = model.generate(z, 15, greedy=0.0, temperature=2.0, generator=torch.Generator().manual_seed(1))
    again = model.generate(z, 15, greedy=0.0, temperature=2.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(sampled, again) and not torch.equal(sampled, greedy)
    assert int(sampled.min()) >= 0 and int(sampled.max()) < 240


def test_generate_controls() -> None:
    model = _model()
    z = torch.randn(2, 32)
    one = model.generate(z, 6, controls=torch.rand(1, 2, 24, generator=torch.Generator().manual_seed(0)))
    assert one.shape == (6, 2)
    with pytest.raises(prnn.ModelError, match="controls"):
        model.generate(z, 6, controls=torch.rand(3, 2, 24))


def test_sample_for_calibration_runs_every_layer() -> None:
    model = _model()
    seen: dict[str, int] = {}
    for name in ("inithid_fc", "concat_input_fc", "output_fc"):
        getattr(model, name).register_forward_hook(lambda m, i, o, n=name: seen.__setitem__(n, seen.get(n, 0) + 1))
    model.sample_for_calibration(4, 7, torch.Generator().manual_seed(0))
    assert seen == {"inithid_fc": 1, "concat_input_fc": 7, "output_fc": 7}


def test_generated_performance_writes_a_readable_midi(tmp_path: Path) -> None:
    model = _model()
    events = model.generate(torch.randn(1, 32), 64, greedy=0.0, generator=torch.Generator().manual_seed(3))
    notes = write_midi(events[:, 0], tmp_path / "generated.mid")
    file = mido.MidiFile(str(tmp_path / "generated.mid"))
    ons = [m for m in file if m.type == "note_on" and m.velocity > 0]
    assert len(ons) == len(notes) == int((events[:, 0] < 88).sum())


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_converted_core_scores_like_the_original(cell: str) -> None:
    from compress.registry import CONVERTERS

    model = _model(cell)
    converted, replaced = CONVERTERS.get("rnn_to_modular").obj(copy.deepcopy(model))
    assert len(replaced) == 1 and replaced[0].startswith("gru:")
    assert type(converted.gru) not in (nn.LSTM, nn.GRU)
    batch = _batch()
    assert torch.allclose(converted.forward_batch(batch)[0], model.forward_batch(batch)[0], atol=1e-5)
    assert converted.score_batch(batch)[0]["all"][0] == pytest.approx(model.score_batch(batch)[0]["all"][0], rel=1e-6)


class _OneBatch:
    def __init__(self, *batch) -> None:
        self.batch = batch

    def batches(self, split: str):
        yield self.batch


def test_check_data() -> None:
    model = _model()
    model.check_data(_OneBatch(*_batch()))
    with pytest.raises(prnn.ModelError, match="init_dim"):
        model.check_data(_OneBatch(torch.zeros(4, 2, dtype=torch.long), None, torch.zeros(2, 8)))
    with pytest.raises(prnn.ModelError, match="control_dim"):
        model.check_data(_OneBatch(torch.zeros(4, 2, dtype=torch.long), torch.zeros(4, 2, 12), torch.zeros(2, 32)))
    small = PerformanceRNN(event_dim=100, hidden_dim=8, num_layers=1)
    with pytest.raises(prnn.ModelError, match="100 events"):
        small.check_data(_OneBatch(torch.full((4, 2), 150), None, torch.zeros(2, 32)))


# Batched input projections reassociate float32 sums differently from per-step calls; 1e-5 is the
# modular RNN's float32 equivalence tolerance (tests/modules).
ALL_LAYERS_TOL = 1e-5


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_modular_core_runs_all_steps_per_layer_and_matches_stepping(cell: str) -> None:
    from compress.modules import convert_rnns

    converted, _ = convert_rnns(copy.deepcopy(_model(cell)))
    batch = (torch.randint(0, 240, (12, 3)), torch.rand(12, 3, 24), torch.randn(3, 32))
    calls: list[tuple[int, ...]] = []
    converted.gru.cells[0].fc_gate_x.register_forward_hook(lambda _m, a, _o: calls.append(tuple(a[0].shape)))
    fast, _ = converted.forward_batch(batch)
    assert calls == [(12 * 3, converted.hidden_dim)], "one input projection for all steps of layer 0"
    handle = converted.gru.register_forward_hook(lambda *_: None)  # a hook on the core forces stepping
    stepped, _ = converted.forward_batch(batch)
    handle.remove()
    assert len(calls) == 1 + 12
    assert (fast - stepped).abs().max() <= ALL_LAYERS_TOL
