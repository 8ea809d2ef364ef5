"""Rollout: how a model's error grows over long autoregressive generations, against the float model.

``N`` sequences of ``L`` steps start from the same seeded draws (compress/models/autoregressive.py). Three
rollouts advance together, one step at a time:

1. the float model samples freely; its events are the reference sequences;
2. the evaluated model is fed the float model's events (teacher-forced): per step and sequence, the KL
   divergence ``KL(p_float || p_model)`` of the next-event distributions (nats) and the relative error
   ``|h_model - h_float| / |h_float|`` of the hidden state;
3. the evaluated model samples freely with the same uniform numbers: the step at which its sequence first
   differs from the float one (``L`` when it never does).

Metrics (``rollout`` is the main one; lower is better for all but ``rollout_first_diff``):

==========================  ====================================================================
``rollout``                 mean per-step KL over every step and sequence (nats)
``rollout_kl_first``        mean KL over the first ``window`` steps
``rollout_kl_last``         mean KL over the last ``window`` steps (growth: last against first)
``rollout_hidden_err``      mean relative hidden-state error; ``_last``: over the last window
``rollout_first_diff``      median first-difference step of the free runs (higher is better)
``rollout_never_diverged``  fraction of sequences identical for all ``L`` steps
``rollout_pitch_tv``        music only: total-variation distance of the pitch-class histograms
                            of the note-on events, float against free-running model (0..1)
==========================  ====================================================================

The evaluator needs the float model: it declares ``wants_reference`` and the engine passes the study's
float (converted) model as ``reference``.

Example:
    >>> from compress.models.performance_rnn import PerformanceRNN
    >>> m = PerformanceRNN(hidden_dim=8, num_layers=1).eval()
    >>> r = evaluate_rollout(m, None, reference=m, sequences=2, steps=6, window=2)
    >>> r["value"], r["metrics"]["rollout_first_diff"]
    (0.0, 6.0)
"""

from __future__ import annotations

from typing import Any

import torch
from tqdm import tqdm

from compress.errors import CompressError
from compress.models.autoregressive import pick, require_autoregressive, shared_draws
from compress.registry import EVALUATORS

__all__ = ["evaluate_rollout", "first_difference", "pitch_class_tv", "step_kl"]

NOTE_ON_EVENTS, LOWEST_PITCH = 88, 21  # the 240-event layout (compress/data/events.py): note_on = pitch - 21

SCHEMA = {
    "type": "object",
    "properties": {
        "sequences": {"type": "integer", "minimum": 1, "maximum": 4096, "description": "Sequences N (16)."},
        "steps": {"type": "integer", "minimum": 2, "maximum": 1_000_000, "description": "Steps L (1000)."},
        "seed": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1, "description": "Seed of z and draws (0)."},
        "temperature": {"type": "number", "exclusiveMinimum": 0, "maximum": 100, "description": "Softmax T (1)."},
        "window": {
            "type": "integer",
            "minimum": 1,
            "maximum": 1_000_000,
            "description": "Steps of the first/last windows (100; at most half of steps).",
        },
    },
    "additionalProperties": False,
}


def step_kl(ref_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``KL(softmax(ref) || softmax(logits))`` per row, float64 (nats).

    Example:
        >>> step_kl(torch.zeros(1, 4), torch.zeros(1, 4)).tolist()
        [0.0]
    """
    ref = torch.log_softmax(ref_logits.detach().double().cpu(), dim=-1)
    other = torch.log_softmax(logits.detach().double().cpu(), dim=-1)
    return (ref.exp() * (ref - other)).sum(-1).clamp_(min=0.0)  # rounding can give -1e-17 for equal rows


def first_difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per sequence (column), the first step where ``a`` and ``b`` differ; ``len(a)`` where they never do.

    Example:
        >>> first_difference(torch.tensor([[1, 1], [2, 2], [3, 4]]), torch.tensor([[1, 0], [2, 2], [3, 4]])).tolist()
        [3, 0]
    """
    differs = a != b
    steps = torch.arange(a.shape[0]).unsqueeze(1).expand_as(differs)
    return torch.where(differs, steps, a.shape[0]).min(dim=0).values


def _pitch_histogram(events: torch.Tensor) -> torch.Tensor:
    ons = events[events < NOTE_ON_EVENTS]
    counts = torch.bincount((ons + LOWEST_PITCH) % 12, minlength=12).double()
    return counts / counts.sum() if counts.sum() > 0 else torch.full((12,), 1 / 12, dtype=torch.float64)


def pitch_class_tv(a: torch.Tensor, b: torch.Tensor) -> float:
    """Total-variation distance of the pitch-class histograms of two event sets' note-on events (0..1).

    Example:
        >>> pitch_class_tv(torch.tensor([39, 39]), torch.tensor([39, 46]))  # C, C against C, G
        0.5
    """
    return float(0.5 * (_pitch_histogram(a) - _pitch_histogram(b)).abs().sum())


def _relative(h: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    ref, h = ref.detach().double().cpu(), h.detach().double().cpu()
    return (h - ref).norm(dim=-1) / ref.norm(dim=-1).clamp(min=1e-12)


def _trajectories(model: Any, reference: Any, n: int, steps: int, seed: int, temperature: float, progress: bool):
    """Per step ``[L, N]``: KL, hidden error, float events and the free-running model's events."""
    x_ref, s_ref, u = shared_draws(reference, n, steps, seed)
    x_free, s_free, _ = shared_draws(model, n, steps, seed)
    s_tf = shared_draws(model, n, steps, seed)[1]
    kl, err, ref_events, free_events = [], [], [], []
    for t in tqdm(range(steps), disable=not progress, desc="rollout", unit="step", leave=False):
        logits_ref, s_ref = reference.rollout_step(x_ref, s_ref)
        logits_tf, s_tf = model.rollout_step(x_ref, s_tf)  # the float model's input: teacher-forced
        logits_free, s_free = model.rollout_step(x_free, s_free)
        kl.append(step_kl(logits_ref, logits_tf))
        err.append(_relative(model.rollout_hidden(s_tf), reference.rollout_hidden(s_ref)))
        x_ref, x_free = pick(logits_ref, u[t], temperature), pick(logits_free, u[t], temperature)
        ref_events.append(x_ref[0])
        free_events.append(x_free[0])
    return torch.stack(kl), torch.stack(err), torch.stack(ref_events), torch.stack(free_events)


def _metrics(kl: torch.Tensor, err: torch.Tensor, ref: torch.Tensor, free: torch.Tensor, window: int, music: bool):
    w = min(window, kl.shape[0] // 2)
    first = first_difference(ref, free).double()
    out = {
        "rollout": float(kl.mean()),
        "rollout_kl_first": float(kl[:w].mean()),
        "rollout_kl_last": float(kl[-w:].mean()),
        "rollout_hidden_err": float(err.mean()),
        "rollout_hidden_err_last": float(err[-w:].mean()),
        "rollout_first_diff": float(first.median()),
        "rollout_never_diverged": float((first == kl.shape[0]).double().mean()),
    }
    if music:
        out["rollout_pitch_tv"] = pitch_class_tv(ref.reshape(-1), free.reshape(-1))
    return out


@EVALUATORS.register(
    "rollout",
    schema=SCHEMA,
    description="Long generations against the float model: per-step KL, hidden error, first divergence.",
)
def evaluate_rollout(
    model: torch.nn.Module,
    data: Any,
    *,
    reference: torch.nn.Module | None = None,
    progress: bool = False,
    sequences: int = 16,
    steps: int = 1000,
    seed: int = 0,
    temperature: float = 1.0,
    window: int = 100,
) -> dict[str, Any]:
    """Roll ``model`` out against ``reference`` (the float model) and return the metrics above.

    ``data`` is not read: the float model's own samples are the sequences.

    Example:
        >>> # evaluate_rollout(qmodel, data, reference=float_model)["metrics"]["rollout_kl_last"]
    """
    if reference is None:
        raise CompressError("the rollout evaluator compares against the float model; pass it as reference=.")
    for m, role in ((model, "the evaluated model"), (reference, "the float reference")):
        require_autoregressive(m, f"the rollout evaluator ({role})")
    model.eval()
    reference.eval()
    with torch.no_grad():
        kl, err, ref, free = _trajectories(model, reference, sequences, steps, seed, temperature, progress)
    metrics = _metrics(kl, err, ref, free, window, reference.generates == "performance_events")
    metrics["sequences"], metrics["steps"] = float(sequences), float(steps)  # not rollout_*: no table column
    return {"metric": "rollout", "value": metrics["rollout"], "metrics": metrics, "higher_is_better": False}


evaluate_rollout.wants_reference = True  # type: ignore[attr-defined]  # the engine passes the float model
